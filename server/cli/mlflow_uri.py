"""Whether ``serve`` can write to the MLflow tracking URI it was given, told in one line.

MLflow itself finds out late and loudly (a traceback of 36-76 lines on the first call) or not
at all (a ``trackbridge://`` URI makes the receiver hand its events to a receiver, maybe
itself). What is checked here is the URI's shape and this machine's drivers, never the
network: an MLflow that does not answer yet is no reason to refuse clients (the receiver keeps
their events and says so, server/flush/outage.py).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from bridge import envvars
from bridge.secret import redact_text

_REMOTE = ("http", "https")
_DATABASES = ("postgresql", "mysql", "mssql", "sqlite")
_HOSTED = ("databricks", "databricks-uc", "uc")
_FILE_STORE_OPT_IN = "MLFLOW_ALLOW_FILE_STORE"
_DRIVERS = {
    "postgresql": ("psycopg", "psycopg2", "pg8000"),
    "mysql": ("pymysql", "MySQLdb", "mysql.connector"),
    "mssql": ("pyodbc", "pymssql"),
}
"""The SQLAlchemy drivers of each database MLflow supports, by their module names."""


def _plugin_schemes() -> set[str]:
    """The schemes installed MLflow plugins add (``mlflow.tracking_store`` entry points)."""
    return {e.name for e in importlib.metadata.entry_points(group="mlflow.tracking_store")}


def tracking_uri_problem(uri: str, source: str, env: Mapping[str, str] = os.environ) -> str | None:
    """Why the receiver cannot write to ``uri``, with the fix; None when it looks right.

    Args:
        uri: The tracking URI (not the embedded store's, which the receiver makes itself).
        source: Where it came from, as the message names it (``--tracking-uri``).
        env: The environment (MLflow's file-store opt-in).
    """
    shown = f"{source} {redact_text(uri)}"
    scheme = urlsplit(uri).scheme.lower()
    base = scheme.split("+", 1)[0]
    if base == "trackbridge":
        return (
            f"{shown} points at a trackbridge receiver (this one or another), which passes"
            " events on rather than storing them: give the MLflow server the receiver writes"
            " to (--tracking-uri http://HOST:5000), or none for the embedded store"
            + _env_hint(source)
        )
    if base in _REMOTE:
        return _remote_problem(uri, shown)
    if base in _DATABASES:
        return _database_problem(uri, shown, base)
    if base in _HOSTED or scheme in _plugin_schemes() or uri in _HOSTED:
        return None
    if base in ("", "file"):
        return _file_store_problem(shown, env)
    return _unknown_scheme(uri, shown, scheme)


def _file_store_problem(shown: str, env: Mapping[str, str]) -> str | None:
    if env.get(_FILE_STORE_OPT_IN, "").lower() in ("true", "1"):
        return None
    return (
        f"{shown} is a file store (a folder such as ./mlruns), which MLflow 3 refuses:"
        " give a database (sqlite:///PATH/mlflow.db), an MLflow server (http://HOST:5000),"
        f" or none for the embedded store (or set {_FILE_STORE_OPT_IN}=true)"
    )


def _env_hint(source: str) -> str:
    if source == envvars.MLFLOW_TRACKING_URI:
        return (
            f"; {envvars.MLFLOW_TRACKING_URI} is the clients' setting: unset it for the"
            " receiver or pass --tracking-uri"
        )
    return ""


def _remote_problem(uri: str, shown: str) -> str | None:
    parts = urlsplit(uri)
    if not parts.hostname:
        return f"{shown} names no host: give http://HOST:PORT (e.g. http://127.0.0.1:5000)"
    try:
        parts.port  # noqa: B018 - urllib checks the port when it is read
    except ValueError:
        port = parts.netloc.rpartition(":")[2]
        return (
            f"{shown}: port {port!r} is not a port number (1-65535): give"
            f" {parts.scheme}://{parts.hostname}:PORT"
        )
    return None


def _database_problem(uri: str, shown: str, base: str) -> str | None:
    from sqlalchemy.engine.url import make_url  # only for database URIs: it is not light
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        dialect = url.get_dialect()
    except NoSuchModuleError:  # before ArgumentError, its base class
        driver = uri.partition(":")[0]
        return f"{shown}: SQLAlchemy has no driver {driver!r}: {_installed_hint(base, driver)}"
    except ArgumentError:
        return f"{shown} is not a database URL: give {base}://USER:PASSWORD@HOST:PORT/DATABASE"
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        return (
            f"{shown} needs the Python driver {exc.name or dialect.driver!r}, which is not"
            f" installed: {_installed_hint(base, url.drivername)}"
        )
    if base == "sqlite" and url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        if not folder.is_dir():
            return (
                f"{shown}: no folder {folder} for the SQLite file: create it, or give a"
                " sqlite:///PATH whose folder exists (four slashes for an absolute path)"
            )
    return None


def _installed_hint(base: str, drivername: str) -> str:
    """Which ``base+driver://`` forms would work here, or what to install."""
    if base == "sqlite":
        return "give sqlite:///PATH"
    present = [m for m in _DRIVERS.get(base, ()) if importlib.util.find_spec(m.split(".")[0])]
    forms = [f"{base}+{m.split('.')[0].lower()}://..." for m in present]
    if forms:
        return f"name an installed one ({' or '.join(forms)}) or install the driver"
    wanted = _DRIVERS.get(base, (drivername,))[0]
    return f"install it (pip install {wanted}) or name another driver ({base}+DRIVER://...)"


def _unknown_scheme(uri: str, shown: str, scheme: str) -> str:
    rest = uri.partition(":")[2]
    if rest.isdigit():  # localhost:5000
        return f"{shown} has no scheme: give http://{uri}"
    known = sorted({*_REMOTE, *_DATABASES, *_HOSTED, "file"})
    close = difflib.get_close_matches(scheme, known, n=1)
    guess = f" (did you mean {close[0]}://?)" if close else ""
    return (
        f"{shown}: MLflow knows no scheme {scheme!r}{guess}: give http(s)://HOST:PORT,"
        " postgresql://, mysql://, mssql://, sqlite:///PATH, or databricks"
    )
