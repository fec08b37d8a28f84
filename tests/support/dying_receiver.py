"""``python -m tests.support.dying_receiver serve ...``: the real ``trackbridge`` CLI that kills
itself (SIGKILL, as ``kill -9``) at a named point, kept out of the product.

The points are the receiver's calls to MLflow's REST API (every one goes through
``mlflow.utils.rest_utils.http_request``: the flusher's, and the tracking service's that serve
a zero-code client's ``set_experiment``), counted from the moment a test arms it: the plan in
the file named by ``DIE_FILE_ENV`` (JSON ``{"nonce": ..., "call": k, "after": bool, "match":
regex, "until": regex}``) kills the process at its ``k``-th call whose endpoint matches
``match``, before the call leaves (``after`` false) or once MLflow has answered, the answer
lost (``after`` true); from the first call matching ``until`` on, nothing is counted. A new
nonce starts the count again. Every counted call is appended to ``<file>.calls`` (``nonce
index METHOD endpoint``), so a test sees where it killed and when there were fewer calls. The
live view's history reads (a thread of its own, after each start) are not counted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from mlflow.store.tracking import rest_store  # noqa: F401 - imported before the patch below
from mlflow.utils import rest_utils

from server.cli.main import main

DIE_FILE_ENV = "TRACKBRIDGE_TEST_DIE_FILE"
"""Read only here: the file a test writes its kill plan to."""
_NOT_COUNTED = ("trackbridge-history",)


def _inject(plan_path: Path) -> None:
    original = rest_utils.http_request
    lock = threading.Lock()
    state: dict[str, Any] = {"nonce": None, "count": 0, "over": False}
    calls_path = plan_path.with_name(plan_path.name + ".calls")

    def http_request(host_creds: Any, endpoint: str, method: str, *args: Any, **kw: Any) -> Any:
        if threading.current_thread().name.startswith(_NOT_COUNTED):
            return original(host_creds, endpoint, method, *args, **kw)
        with lock:
            try:
                plan = json.loads(plan_path.read_text())
            except (OSError, ValueError):
                plan = None
            if plan is None:
                return original(host_creds, endpoint, method, *args, **kw)
            if plan["nonce"] != state["nonce"]:
                state.update(nonce=plan["nonce"], count=0, over=False)
            state["over"] = state["over"] or bool(re.search(plan["until"], endpoint))
            if state["over"] or not re.search(plan["match"], endpoint):
                return original(host_creds, endpoint, method, *args, **kw)
            state["count"] += 1
            due = state["count"] == plan["call"]
            with calls_path.open("a") as log:
                log.write(f"{plan['nonce']} {state['count']} {method} {endpoint}\n")
                log.flush()
                os.fsync(log.fileno())
        if due and not plan["after"]:
            os.kill(os.getpid(), signal.SIGKILL)
        answer = original(host_creds, endpoint, method, *args, **kw)
        if due:
            os.kill(os.getpid(), signal.SIGKILL)
        return answer

    rest_utils.http_request = http_request
    for module in list(sys.modules.values()):  # those that imported it by name already
        if getattr(module, "http_request", None) is original:
            module.http_request = http_request  # type: ignore[attr-defined]


if __name__ == "__main__":
    _inject(Path(os.environ[DIE_FILE_ENV]))
    sys.exit(main())
