"""The deployment files: Kustomize renders valid Kubernetes objects with distinct probes, a grace
period above the drain timeout, requests and limits and a pinned image; compose runs two API
replicas behind an SSE-friendly proxy; the connection budget check refuses oversubscription;
`keel serve` runs on uvloop and httptools."""

import contextlib
import importlib.metadata
import json
import re
import socket
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import uvloop
import yaml
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import error_body
from checkpoints.capacity import check_connection_budget
from cli.serving import server_config, worker_sockets
from graph.errors import ConfigError
from graph.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "k8s")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {doc["kind"]: doc for doc in yaml.safe_load_all(out)}


# Prometheus Operator kinds: kubernetes-validate has no schema for CRDs, so their structure is
# checked below and the rules by promtool (tests/integration/test_metrics.py).
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def test_manifests_validate_against_the_kubernetes_schemas(rendered):
    assert set(rendered) == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        *OPERATOR_KINDS,
    }
    for kind, doc in rendered.items():
        if kind not in OPERATOR_KINDS:
            kubernetes_validate.validate(doc, "1.37", strict=True)


def test_network_policy_admits_only_the_http_port_to_the_api_pods(rendered):
    policy = rendered["NetworkPolicy"]["spec"]
    pods = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"] == pods
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    (api,) = rendered["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": api["ports"][0]["name"]}]
    egress = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    # DNS, Postgres, Redis, Chroma, HTTPS (LLM, webhooks), OTLP/HTTP.
    assert egress == {
        ("UDP", 53),
        ("TCP", 53),
        *(("TCP", p) for p in (5432, 6379, 8000, 443, 4318)),
    }


def test_service_monitor_scrapes_every_replica_and_the_rules_are_the_alerts(rendered):
    monitor = rendered["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = rendered["Service"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert float(endpoint["scrapeTimeout"][:-1]) < float(endpoint["interval"][:-1])
    rule = rendered["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"} and set(rule["spec"]) == {
        "groups"
    }
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]


def test_deployment_probes_grace_resources_and_image(rendered):
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    paths = {
        probe: api[probe]["httpGet"]["path"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    assert paths == {
        "livenessProbe": "/livez",
        "readinessProbe": "/readyz",
        "startupProbe": "/startupz",
    }
    env = {e["name"]: e["value"] for e in api["env"]}
    assert pod["terminationGracePeriodSeconds"] > float(env["KEEL_DRAIN_TIMEOUT"])
    assert int(env["KEEL_REPLICAS"]) == rendered["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]
    assert api["resources"]["requests"] and api["resources"]["limits"]
    assert re.fullmatch(r"[^:]+:\d+\.\d+\.\d+", api["image"])
    selector = rendered["Deployment"]["spec"]["selector"]["matchLabels"]
    assert rendered["Service"]["spec"]["selector"] == selector
    assert rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector


def test_compose_runs_two_replicas_behind_an_sse_proxy():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api-1", "api-2", "proxy", "postgres", "redis", "chroma"} <= set(services)
    for name in ("api-1", "api-2"):
        assert services[name]["environment"]["KEEL_REPLICAS"] == "2"
        assert services[name]["stop_grace_period"] == "40s"
        # Required: compose stops with this message instead of restarting refused replicas.
        assert services[name]["environment"]["KEEL_API_KEYS"].startswith("${KEEL_API_KEYS:?")
        # one corpus: chunks in the shared Postgres, the BM25 folder on one shared volume
        environment = services[name]["environment"]
        assert environment["KEEL_CORPUS_URL"] == environment["KEEL_DATABASE_URL"]
        assert f"lexical:{environment['KEEL_LEXICAL_DIR']}" in services[name]["volumes"]
    for service in services.values():  # an exact version, never a moving tag
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+(\.\d+)?(-[a-z]+)?", service["image"]), service
    conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    upstreams = re.findall(r"server (api-\d):8000", conf)
    assert upstreams == ["api-1", "api-2"]
    assert "proxy_buffering off;" in conf and "proxy_read_timeout 3600s;" in conf
    (body_mib,) = re.findall(r"client_max_body_size (\d+)m;", conf)
    limit = Settings().max_body_bytes
    assert int(body_mib) * 1024 * 1024 == limit
    # nginx refuses a larger body first: with keel's own JSON error, not its HTML page.
    assert "error_page 413 @payload_too_large;" in conf
    (body,) = re.findall(r"return 413 '(.+)';", conf)
    assert json.loads(body) == error_body(
        "payload_too_large", f"request body larger than {limit} bytes"
    )


def test_env_example_points_chroma_away_from_keels_port():
    example = (ROOT / ".env.example").read_text()
    (chroma,) = re.findall(r"^# KEEL_CHROMA_URL=(\S+)$", example, re.M)
    assert str(Settings().port) not in chroma


def test_connection_budget_refuses_oversubscription():
    check_connection_budget(10, 1, 9, 100)  # 90 <= 100 - 10
    with pytest.raises(ConfigError, match="= 100 connections"):
        check_connection_budget(10, 2, 5, 100)


def test_keel_serve_runs_on_uvloop_and_httptools():
    # Named, not uvicorn's "auto": a missing package fails at start instead of silently
    # serving on asyncio's loop and h11 (the Docker image had neither).
    required = {r.split("=")[0] for r in importlib.metadata.requires("keel") or () if ";" not in r}
    assert {"uvloop", "httptools"} <= required  # keel's own dependencies, not the dev tools'
    config = server_config(Settings())
    assert import_from_string(HTTP_PROTOCOLS[config.http]) is HttpToolsProtocol
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_workers_listen_on_one_port_and_the_kernel_spreads_connections():
    config = server_config(Settings(host="127.0.0.1", port=0))
    sockets = worker_sockets(config, 2)
    try:
        assert len({s.getsockname() for s in sockets}) == 1  # one address, port 0 resolved once
        for sock in sockets:
            sock.listen(128)
            sock.setblocking(False)
        clients = [socket.create_connection(sockets[0].getsockname()) for _ in range(64)]
        accepted = [0, 0]
        for i, sock in enumerate(sockets):
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.accept()[0].close()
                    accepted[i] += 1
        # Binomial(64, 1/2) per socket: below 16 on either side has odds of about 1 in 30,000;
        # on one shared socket one worker could hold every connection.
        assert sum(accepted) == 64 and min(accepted) >= 16, accepted
        for client in clients:
            client.close()
        with pytest.raises(ConfigError, match="cannot listen"):  # taken without SO_REUSEPORT
            with socket.create_server(("127.0.0.1", 0)) as taken:
                worker_sockets(
                    server_config(Settings(host="127.0.0.1", port=taken.getsockname()[1])), 2
                )
    finally:
        for sock in sockets:
            sock.close()
