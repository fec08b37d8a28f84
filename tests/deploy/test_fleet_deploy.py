"""deploy/compose.fleet.yaml and deploy/k8s-fleet/ checked against what the receiver, the
flusher and nats-server really read, without Docker or a cluster: the queue every receiver is
given names every NATS node, routes join all nodes, probes ask the full health."""

from __future__ import annotations

import os
import re
from typing import Any
from unittest import mock

import yaml

from server.cli.flush import serve_argv
from server.cli.serve import _serve_config
from server.config import ReceiverConfig
from server.fleet.config import parse_queue_url
from tests.deploy.test_deploy_files import (
    DEPLOY,
    _published,
    image_env,
    load_compose,
    parse_cli,
    receiver_config,
    receiver_env_ok,
)

K8S_FLEET = DEPLOY / "k8s-fleet"
NATS_CLIENT_PORT = 4222  # nats-server's default; neither file sets another
NODES = ("nats-0", "nats-1", "nats-2")


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _flush_config(command: list[str], env: dict[str, str]) -> ReceiverConfig:
    """The config ``trackbridge flush ARGS`` runs ``serve`` with in ``env``."""
    args = parse_cli(command)
    assert args.command == "flush", command
    serve = parse_cli(serve_argv(args, env))
    with mock.patch.dict(os.environ, env, clear=True):
        return _serve_config(serve)


def test_fleet_compose_joins_three_nats_nodes_and_every_receiver_names_them_all() -> None:
    compose = load_compose("compose.yaml", "compose.fleet.yaml")
    services = compose["services"]
    assert {*NODES, "receiver", "receiver-2", "flusher"} <= set(services)
    cluster_names = set()
    for node in NODES:
        spec = services[node]
        command = [str(c) for c in spec["command"]]
        assert "-js" in command and _flag(command, "-n") == node
        store = _flag(command, "-sd")
        assert any(v.endswith(f":{store}") for v in spec["volumes"]), "the store on a volume"
        assert spec["volumes"][0].split(":")[0] in compose["volumes"]
        cluster_names.add(_flag(command, "--cluster_name"))
        cluster_port = int(_flag(command, "--cluster").rpartition(":")[2])
        routes = {r.split("//")[1] for r in _flag(command, "--routes").split(",")}
        assert routes == {f"{other}:{cluster_port}" for other in NODES if other != node}
        monitor = _flag(command, "-m")
        assert f"http://127.0.0.1:{monitor}/healthz" in spec["healthcheck"]["test"]
    assert len(cluster_names) == 1
    expected = tuple(f"nats://{node}:{NATS_CLIENT_PORT}" for node in NODES)

    published: dict[int, str] = {}
    volumes = set()
    for name in ("receiver", "receiver-2"):
        service = services[name]
        env = {k: str(v) for k, v in service["environment"].items()}
        assert all(receiver_env_ok(k) for k in env), sorted(env)
        config, _ = receiver_config(service["command"], {**image_env(), **env})
        assert config.fleet is not None and config.fleet.servers == expected
        assert config.fleet.replicas == 3 and config.fleet.flush
        assert {
            n for n, c in service["depends_on"].items() if c["condition"] == "service_healthy"
        } >= set(NODES)
        for port in _published(service):
            host_port = next(p for p in service["ports"] if str(p).endswith(f":{port}"))
            assert host_port not in published.values(), "two receivers on one host port"
            published[len(published)] = host_port
        volumes.add(service["volumes"][0].split(":")[0])
    assert len(volumes) == 2, "each receiver its own working set"

    flusher = services["flusher"]
    env = {k: str(v) for k, v in flusher["environment"].items()}
    config = _flush_config([str(c) for c in flusher["command"]], {**image_env(), **env})
    assert config.fleet is not None and config.fleet.servers == expected
    assert "ports" not in flusher, "a flusher takes no clients"
    assert flusher["volumes"][0].split(":")[0] not in volumes


def _k8s_fleet_docs() -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in sorted(K8S_FLEET.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def test_k8s_fleet_overlay_lists_its_files_and_adds_the_queue_to_every_receiver() -> None:
    kustomization = yaml.safe_load((K8S_FLEET / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S_FLEET / resource).exists(), resource
    for patch in kustomization["patches"]:
        assert (K8S_FLEET / patch["path"]).exists()
    docs = _k8s_fleet_docs()
    patch = docs[("ConfigMap", "trackbridge-config")]
    base = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())
    assert base["metadata"]["name"] == "trackbridge-config"  # the receivers' envFrom
    fleet = parse_queue_url(patch["data"]["TRACKBRIDGE_QUEUE"])
    stateful = docs[("StatefulSet", "nats")]
    service = docs[("Service", stateful["spec"]["serviceName"])]
    pods = [f"nats-{i}" for i in range(stateful["spec"]["replicas"])]
    client_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "client")
    headless = service["metadata"]["name"]
    assert fleet.servers == tuple(f"nats://{p}.{headless}:{client_port}" for p in pods)
    assert fleet.replicas == 3 == len(pods)
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]

    conf = docs[("ConfigMap", "nats-config")]["data"]["nats.conf"]
    cluster_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "cluster")
    routes = set(re.findall(r"nats://([\w.-]+:\d+)", conf))
    assert routes == {f"{p}.{headless}:{cluster_port}" for p in pods}
    assert f"port: {client_port}" in conf and "jetstream" in conf
    container = stateful["spec"]["template"]["spec"]["containers"][0]
    store = re.search(r"store_dir: (\S+)", conf).group(1)  # type: ignore[union-attr]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == store
    assert stateful["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    monitor = re.search(r"http_port: (\d+)", conf).group(1)  # type: ignore[union-attr]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["monitor"] == int(monitor) and ports["client"] == client_port
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"  # the full check
    labels = stateful["spec"]["template"]["metadata"]["labels"]
    assert stateful["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs[("PodDisruptionBudget", "nats")]["spec"]["maxUnavailable"] == 1
    assert labels["app.kubernetes.io/name"] != "trackbridge", (
        "the receivers' Services must not select NATS"
    )

    flusher = docs[("Deployment", "trackbridge-flusher")]
    spec = flusher["spec"]["template"]["spec"]["containers"][0]
    assert [e["configMapRef"]["name"] for e in spec["envFrom"]] == ["trackbridge-config"]
    config = _flush_config(spec["args"], {**image_env(), **base["data"], **patch["data"]})
    assert config.fleet == fleet
    flusher_labels = flusher["spec"]["template"]["metadata"]["labels"]
    assert flusher_labels["app.kubernetes.io/name"] != "trackbridge", "no client goes to a flusher"
