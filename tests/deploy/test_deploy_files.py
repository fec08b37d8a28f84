"""deploy/ checked against what the receiver really reads and serves, without Docker or a cluster.

Ports, paths, probes and flags are derived from the CLI parser and ReceiverConfig, never copied:
a renamed flag, a moved default or a new port breaks these tests, not a deployment.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shlex
import subprocess
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from bridge import envvars
from bridge.protocol import INGEST_SERVICE
from server.cli.health import local_address
from server.cli.health import target as health_target
from server.cli.main import build_parser
from server.config import ReceiverConfig

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"


# -- what the receiver reads and serves -------------------------------------------------------


def trackbridge_env_names() -> set[str]:
    """Every variable in bridge/envvars.py (TRACKBRIDGE_* and the MLflow ones it names)."""
    return {v for k, v in vars(envvars).items() if k.isupper() and isinstance(v, str)}


@functools.cache
def mlflow_env_names() -> set[str]:
    """Every variable MLflow reads: its environment_variables module and `mlflow server`'s."""
    import mlflow.environment_variables as mlflow_env

    with warnings.catch_warnings():  # importing MLflow's CLI warns about its own type hints
        warnings.simplefilter("ignore")
        from mlflow.cli import server

    names = {
        v.name
        for v in vars(mlflow_env).values()
        if isinstance(getattr(v, "name", None), str) and v.name.startswith("MLFLOW_")
    }
    return names | {p.envvar for p in server.params if isinstance(p.envvar, str)}


def receiver_env_ok(name: str) -> bool:
    return name in trackbridge_env_names() or (
        name.startswith("MLFLOW_") and name in mlflow_env_names()
    )


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """``trackbridge ARGV`` as the CLI parses it (SystemExit on an unknown flag fails the test)."""
    return build_parser().parse_args(argv)


def receiver_config(argv: list[str], env: dict[str, str]) -> tuple[ReceiverConfig, float]:
    """The config ``trackbridge serve ARGV`` would run with in ``env`` (exactly as the CLI
    builds it), and its shutdown budget."""
    from server.cli.serve import _serve_config

    args = parse_cli(argv)
    assert args.command == "serve", argv
    with mock.patch.dict(os.environ, env, clear=True):
        config = _serve_config(args)
    return config, config.shutdown_timeout_s


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def drain_budget_s(shutdown_timeout_s: float) -> float:
    """The longest a SIGTERM'd receiver can take (Receiver.stop): gRPC grace and ingest stop
    (5 s each), the queue's drain, then the artifact uploads' (one shutdown timeout each)."""
    return 2 * shutdown_timeout_s + 10


# -- YAML and templating ------------------------------------------------------------------------


class _ComposeLoader(yaml.SafeLoader):
    """Compose YAML: its merge tags (!override, !reset) load as their plain value."""


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("!override", "!reset"):
    _ComposeLoader.add_constructor(_tag, _plain)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def dotenv(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=value: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(text: str, env: dict[str, str]) -> tuple[str, set[str]]:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``; returns the text and the
    variables used without a default."""
    needed: set[str] = set()

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op and op.endswith("-"):
            return env.get(name) or arg
        needed.add(name)
        return env.get(name, "")

    return _VAR.sub(sub, text), needed


def load_compose(*names: str) -> dict[str, Any]:
    """The compose files merged as ``docker compose -f A -f B`` does, for the parts used here
    (services' keys are replaced or merged one level deep)."""
    env = dotenv(DEPLOY / ".env.example")
    merged: dict[str, Any] = {}
    for name in names:
        text, needed = interpolate((DEPLOY / name).read_text(), env)
        missing = needed - set(env)
        assert not missing, f"{name} uses {sorted(missing)}, not in deploy/.env.example"
        doc = yaml.load(text, Loader=_ComposeLoader)  # noqa: S506 - SafeLoader subclass
        for key, value in doc.items():
            if key != "services":
                merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
                continue
            services = merged.setdefault("services", {})
            for service, spec in value.items():
                into = services.setdefault(service, {})
                for field, part in spec.items():
                    if field == "environment" and isinstance(into.get(field), dict):
                        into[field] = {**into[field], **part}
                    else:
                        into[field] = part
    return merged


def k8s_docs() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object under deploy/k8s, by (kind, name)."""
    docs = {}
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["metadata"]["name"], path
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


# -- the image ---------------------------------------------------------------------------------


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    stage: list[tuple[str, str]] = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stage = []
        stage.append((instruction.upper(), rest.strip()))
    return stage


def exec_form(text: str) -> list[str]:
    import json

    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, rest in dockerfile(DEPLOY / "Dockerfile"):
        if instruction == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_the_image_serves_and_stores_where_the_receiver_does() -> None:
    stage = dockerfile(DEPLOY / "Dockerfile")
    get = {i: r for i, r in stage}  # the last of each instruction
    env = image_env()
    assert all(receiver_env_ok(k) for k in env if k.startswith(("TRACKBRIDGE_", "MLFLOW_"))), env
    entrypoint, cmd = exec_form(get["ENTRYPOINT"]), exec_form(get["CMD"])
    assert entrypoint == ["trackbridge"]
    with pytest.raises(ValueError, match="plaintext"):
        receiver_config(cmd, env)  # off loopback: TLS, or an explicit --insecure-plaintext
    tls = {envvars.TRACKBRIDGE_SERVE_TLS_CERT: "/tls/crt", envvars.TRACKBRIDGE_SERVE_TLS_KEY: "k"}
    config, _ = receiver_config(cmd, {**env, **tls})
    grpc_port = port_of(config.listen)
    http = config.http_address
    assert http is not None
    http_port = http[1]
    assert {int(p) for p in get["EXPOSE"].split()} == {grpc_port, http_port}
    assert exec_form(get["VOLUME"]) == [str(config.data_dir)]
    user = get["USER"].split(":")[0]
    assert user not in ("0", "root") and user.isdigit()

    health = exec_form(get["HEALTHCHECK"].split("CMD", 1)[1].strip())
    assert health[0] == "trackbridge"
    args = parse_cli(health[1:])
    assert args.command == "health"
    assert port_of(health_target(args, env)) == grpc_port

    build = dockerfile_all_text()
    assert "-c .ci/constraints.txt" in build and '".[server,fleet]"' in build


def dockerfile_all_text() -> str:
    return (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")


def test_the_images_build_context_keeps_what_it_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    copied = [
        src
        for instruction, rest in _all_instructions(DEPLOY / "Dockerfile")
        if instruction == "COPY" and not rest.startswith("--from")
        for src in rest.split()[:-1]
    ]
    for src in copied:
        assert (REPO / src).exists(), src
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f"{src} is not in the build context"


def _all_instructions(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_mlflow_image_runs_the_mlflow_the_receiver_is_tested_with() -> None:
    pinned = re.search(r"^mlflow==(\S+)$", (REPO / ".ci/constraints.txt").read_text(), re.M)
    assert pinned
    text = (DEPLOY / "mlflow" / "Dockerfile").read_text()
    assert f'"mlflow=={pinned.group(1)}"' in text
    assert "psycopg2-binary" in text and "boto3" in text


# -- compose -----------------------------------------------------------------------------------


def _receiver_service(compose: dict[str, Any]) -> tuple[dict[str, Any], ReceiverConfig, float]:
    service = compose["services"]["receiver"]
    env = {k: str(v) for k, v in service["environment"].items()}
    assert all(receiver_env_ok(k) for k in env), sorted(k for k in env if not receiver_env_ok(k))
    config, shutdown_s = receiver_config(service["command"], {**image_env(), **env})
    return service, config, shutdown_s


def _published(service: dict[str, Any]) -> dict[int, str]:
    """container port -> host address it is published on."""
    out = {}
    for spec in service.get("ports", []):
        host, _, rest = str(spec).rpartition(":")
        address = host.rpartition(":")[0] if host.count(":") else "0.0.0.0"
        out[int(rest)] = address
    return out


def test_compose_stack_has_its_parts_wired_together() -> None:
    compose = load_compose("compose.yaml")
    services = compose["services"]
    assert set(services) == {
        "postgres", "minio", "create-bucket", "mlflow", "mlflow-user", "receiver"
    }  # fmt: skip

    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--app-name=basic-auth" in command
    mlflow_port = int(re.search(r"--port[= ](\d+)", command).group(1))  # type: ignore[union-attr]
    menv = {k: str(v) for k, v in mlflow["environment"].items()}
    assert all(k in mlflow_env_names() for k in menv if k.startswith("MLFLOW_")), menv
    assert len(menv["MLFLOW_AUTH_ADMIN_PASSWORD"]) >= 12, "MLflow needs 12+ characters"
    assert menv["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert menv["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in menv["MLFLOW_BACKEND_STORE_URI"]
    assert menv["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "--artifacts-destination=s3://" in command
    assert f"mlflow:{mlflow_port}" in menv["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"

    service, config, shutdown_s = _receiver_service(compose)
    assert config.effective_tracking_uri == f"http://mlflow:{mlflow_port}"
    assert config.alone  # the stack's MLflow has this one receiver: one call per new run
    assert service["depends_on"]["mlflow"]["condition"] == "service_healthy"
    env = service["environment"]
    # the receiver logs in as its own MLflow user, which the one-shot mlflow-user makes first
    user = services["mlflow-user"]
    uenv = user["environment"]
    assert env["MLFLOW_TRACKING_USERNAME"] == uenv["RECEIVER_MLFLOW_USERNAME"] != "admin"
    assert uenv["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert user["command"][-1] == "/opt/mlflow/create_user.py"
    assert (DEPLOY / "mlflow" / "create_user.py").is_file()
    assert user["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert service["depends_on"]["mlflow-user"]["condition"] == "service_completed_successfully"
    secret_file = env["MLFLOW_TRACKING_PASSWORD_FILE"]
    assert secret_file == f"/run/secrets/{service['secrets'][0]}"
    assert secret_file == uenv["RECEIVER_MLFLOW_PASSWORD_FILE"]
    assert compose["secrets"][service["secrets"][0]]["environment"] == "RECEIVER_MLFLOW_PASSWORD"
    admin_file = uenv["MLFLOW_TRACKING_PASSWORD_FILE"].rpartition("/")[2]
    assert compose["secrets"][admin_file]["environment"] == "MLFLOW_AUTH_ADMIN_PASSWORD"
    assert admin_file not in service["secrets"], "the receiver never holds the admin password"
    published = _published(service)
    http = config.http_address
    assert http is not None
    assert published == {port_of(config.listen): "127.0.0.1", http[1]: "127.0.0.1"}
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert mounts[str(config.data_dir)] in compose["volumes"]
    grace = float(service["stop_grace_period"].rstrip("s"))
    assert grace > drain_budget_s(shutdown_s)


def test_compose_tls_override_serves_tls_with_a_matching_health_check() -> None:
    service, config, _ = _receiver_service(load_compose("compose.yaml", "compose.tls.yaml"))
    args = parse_cli(service["command"])
    assert not args.insecure_plaintext
    assert args.require_tokens
    assert config.alone
    env = service["environment"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    tls_dir = next(path for path in mounts if path.startswith("/etc/trackbridge"))
    for name in (envvars.TRACKBRIDGE_SERVE_TLS_CERT, envvars.TRACKBRIDGE_SERVE_TLS_KEY):
        assert env[name].startswith(tls_dir + "/")
    health = service["healthcheck"]["test"]
    assert health[:2] == ["CMD", "trackbridge"]
    check = parse_cli(health[2:])
    assert check.command == "health"
    # the CA that signed the certificate (as `trackbridge tls init` lays it out), not the
    # certificate itself: a CA-signed leaf is no trust anchor
    # (tests/deploy/test_deploy_run.py runs this check against a real receiver)
    assert str(check.tls_ca) == f"{tls_dir}/ca.pem"
    assert port_of(local_address({**image_env(), **env})) == port_of(config.listen)
    assert port_of(config.listen) in _published(service)


@pytest.mark.slow
def test_the_env_file_with_secrets_is_ignored_and_its_example_is_not() -> None:
    def ignored(path: str) -> bool:
        check = ["git", "check-ignore", "-q", path]
        return subprocess.run(check, cwd=REPO, check=False).returncode == 0

    assert ignored("deploy/.env")
    assert not ignored("deploy/.env.example")


# -- Kubernetes --------------------------------------------------------------------------------


def _statefulset(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (sts,) = [d for (kind, _), d in docs.items() if kind == "StatefulSet"]
    return sts


def _pod_env(
    docs: dict[tuple[str, str], dict[str, Any]], container: dict[str, Any]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(docs[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "<from a secret>")
    return env


def test_kustomization_lists_existing_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"]
    assert {i["name"] for i in kustomization["images"]} == {
        c["image"] for c in _statefulset(k8s_docs())["spec"]["template"]["spec"]["containers"]
    }


def test_statefulset_probes_ports_and_volume_match_the_receiver(tmp_path: Path) -> None:
    docs = k8s_docs()
    sts = _statefulset(docs)
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()

    env = _pod_env(docs, container)
    assert all(receiver_env_ok(k) for k in env), sorted(k for k in env if not receiver_env_ok(k))
    # the fleet's token keys and revocation list the pod mounts, made here (read at start)
    keys, revoked = tmp_path / "token-keys", tmp_path / "revoked.txt"
    from server.cli.main import main

    assert main(["token", "keygen", "--keys", str(keys), "--key-id", "k1"]) == 0
    revoked.write_text("")
    files = {
        envvars.TRACKBRIDGE_TOKEN_KEYS_FILE: str(keys),
        envvars.TRACKBRIDGE_TOKEN_REVOCATIONS_FILE: str(revoked),
    }
    config, shutdown_s = receiver_config(container["args"], {**env, **files})
    # two replicas share one MLflow behind one Service: a client may move between them, so
    # each run is created with the check for the other's copy
    assert spec["replicas"] > 1 and not config.alone
    # clients need a token, signed with the fleet's keys so that every pod accepts it
    assert config.security.require_tokens
    assert config.security.token_keys_file == str(keys)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    grpc_port = port_of(config.listen)
    assert ports["grpc"] == grpc_port
    http = config.http_address
    assert http is not None and ports["http"] == http[1]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc = container[probe]["grpc"]
        assert grpc["port"] == grpc_port, probe
        assert grpc.get("service", "") in ("", INGEST_SERVICE), probe

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    assert mounts["data"] == str(config.data_dir) and "data" in claims
    assert pod["terminationGracePeriodSeconds"] > drain_budget_s(shutdown_s)

    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    uid = next(r for i, r in dockerfile(DEPLOY / "Dockerfile") if i == "USER").split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == uid

    secret = docs[("Secret", "trackbridge-secrets")]["stringData"]
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == "trackbridge-secrets" and ref["key"] in secret, item
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)
    secret_dir = mounts[secret_volume["name"]]
    for name in (envvars.MLFLOW_TRACKING_PASSWORD_FILE, envvars.TRACKBRIDGE_TOKEN_KEYS_FILE):
        path = env[name]
        assert path.rpartition("/")[0] == secret_dir, name
        assert path.rpartition("/")[2] in secret, name
    revocations = env[envvars.TRACKBRIDGE_TOKEN_REVOCATIONS_FILE].rpartition("/")
    config_volume = next(v for v in pod["volumes"] if mounts.get(v["name"]) == revocations[0])
    listed = docs[("ConfigMap", config_volume["configMap"]["name"])]["data"]
    assert listed[revocations[2]] == "", "an empty list: a pod refuses to start without one"


def test_services_and_budget_select_the_receivers() -> None:
    docs = k8s_docs()
    sts = _statefulset(docs)
    labels = sts["spec"]["template"]["metadata"]["labels"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    services = {name: d for (kind, name), d in docs.items() if kind == "Service"}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert any(s["spec"].get("clusterIP") != "None" for s in services.values())
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    (pdb,) = [d for (kind, _), d in docs.items() if kind == "PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert sts["spec"]["replicas"] > pdb["spec"].get("maxUnavailable", 0)


def test_the_ingress_for_outside_clients_speaks_grpc_to_a_service_port() -> None:
    docs = k8s_docs()
    (ingress,) = [d for (kind, _), d in docs.items() if kind == "Ingress"]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert ingress["spec"]["tls"]
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            service = docs[("Service", backend["name"])]
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


# -- systemd -----------------------------------------------------------------------------------


def unit(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; systemd allows a key many times."""
    section, out = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def test_systemd_unit_runs_a_valid_serve_command_hardened() -> None:
    entries = unit(SYSTEMD / "trackbridge.service")
    service = {k: v for s, k, v in entries if s == "Service"}
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/trackbridge")
    env = dict(v.split("=", 1) for s, k, v in entries if k == "Environment")
    with pytest.raises(ValueError, match="plaintext"):
        receiver_config(argv[1:], env)  # without the drop-in's TLS it refuses to start
    drop_in = unit(SYSTEMD / "trackbridge.service.d" / "credentials.conf.example")
    env.update(v.split("=", 1) for s, k, v in drop_in if k == "Environment")
    config, shutdown_s = receiver_config(argv[1:], env)
    assert config.security.tls
    assert str(config.data_dir) == f"/var/lib/{service['StateDirectory']}"
    assert float(service["TimeoutStopSec"]) > drain_budget_s(shutdown_s)
    with pytest.raises(SystemExit) as helped:
        parse_cli([*argv[1:], "--help"])
    assert helped.value.code == 0
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "KillSignal": "SIGTERM",
    }.items():
        assert service[key] == value, key
    assert service.get("User") or service.get("DynamicUser") == "yes"


def test_systemd_credentials_drop_in_feeds_known_variables() -> None:
    entries = unit(SYSTEMD / "trackbridge.service.d" / "credentials.conf.example")
    loaded = {v.split(":", 1)[0] for s, k, v in entries if k == "LoadCredential"}
    env = dict(v.split("=", 1) for s, k, v in entries if k == "Environment")
    assert env and all(receiver_env_ok(name) for name in env), env
    for value in env.values():
        if value.startswith("%d/"):
            assert value[3:] in loaded, value
    assert any(k == "EnvironmentFile" for _, k, _ in entries)
