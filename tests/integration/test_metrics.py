"""Prometheus metrics of a real server after real runs, checked by Prometheus's own `promtool`:
the scrape passes `promtool check metrics`, series stay bounded under many tenants, the alerting
rules pass their unit tests, and every dashboard query names a metric keel exports."""

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from httpx_sse import connect_sse

from api.auth import hash_key
from tests.fake_llm import STREAM_ONLY

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"


@pytest.fixture(scope="session")
def promtool(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`promtool` from PATH, else from Debian's `prometheus` package, unpacked (not installed)."""
    found = shutil.which("promtool")
    if found:
        return found
    where = tmp_path_factory.mktemp("promtool")
    subprocess.run(["apt-get", "download", "prometheus"], cwd=where, check=True)
    deb = next(where.glob("prometheus_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(where / "root")], check=True)
    return str(where / "root" / "usr" / "bin" / "promtool")


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def test_scrape_after_real_runs_passes_promtool(
    start_server, postgres_url, data_dir, fake_llm_url, promtool
):
    server = start_server(
        KEEL_DATABASE_URL=postgres_url,
        KEEL_DATA_DIR=str(data_dir),
        KEEL_LLM_BASE_URL=fake_llm_url,
        **STREAM_ONLY,
        KEEL_LLM_API_KEY="test",
        KEEL_LLM_MODEL="slow-1-8",
        KEEL_LLM_ALLOWED_MODELS="fail500",
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for model in ("slow-1-8", "slow-1-8", "fail500"):
            tid = client.post("/v1/threads").json()["thread_id"]
            body = {"message": QUESTION, "context": {"model": model, "use_cache": False}}
            with connect_sse(client, "POST", f"/v1/threads/{tid}/runs/stream", json=body) as src:
                events = [(e.id, e.event) for e in src.iter_sse()]
            assert events[-1][1] == "run.finished"
        run_id = events[0][0].split(":")[0]
        with connect_sse(
            client,
            "GET",
            f"/v1/threads/{tid}/runs/{run_id}/stream",
            headers={"Last-Event-ID": events[2][0]},
        ) as src:
            assert len(list(src.iter_sse())) == len(events) - 3
    text = scrape(server.url)
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked
    assert sample(text, "keel_runs_total", outcome="succeeded") == 3
    assert sample(text, "keel_node_duration_seconds_count", node="guard") == 3
    assert sample(text, "keel_answers_total", service_level="documents_only") == 1
    assert sample(text, "keel_answers_total", service_level="full") == 2
    assert sample(text, "keel_llm_requests_total", model="fail500", outcome="failure") == 3
    assert sample(text, "keel_llm_retries_total", model="fail500") == 2
    assert sample(text, "keel_llm_requests_total", model="slow-1-8", outcome="success") >= 1
    assert sample(text, "keel_llm_tokens_total", model="slow-1-8", direction="output") >= 8
    assert sample(text, "keel_stream_resumes_total", result="resumed") == 1
    assert sample(text, "keel_sse_first_event_seconds_count") == 4
    route = "/v1/threads/{thread_id}/runs/stream"
    assert sample(text, "keel_http_request_duration_seconds_count", route=route) == 3
    assert sample(text, "keel_db_pool_connections", state="open") >= 1
    assert sample(text, "keel_event_log_append_duration_seconds_count") >= 3


def test_series_stay_bounded_over_10000_requests_from_100_tenants(start_server, data_dir):
    keys = {f"key-{n}-{uuid.uuid4().hex}": f"tenant{n}" for n in range(100)}
    server = start_server(
        KEEL_DATA_DIR=str(data_dir),
        KEEL_API_KEYS=json.dumps({hash_key(k): t for k, t in keys.items()}),
    )

    async def hammer() -> None:
        names = list(keys)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            gate = asyncio.Semaphore(32)

            async def one(n: int) -> None:
                headers = {"X-API-Key": names[n % 100]}
                path = "/v1/threads" if n % 2 else f"/v1/threads/{uuid.uuid4()}"
                async with gate:
                    try:
                        reply = await client.get(path, headers=headers)
                    except httpx.RemoteProtocolError:  # a keep-alive closed as it was reused
                        reply = await client.get(path, headers=headers)
                assert reply.status_code == (200 if n % 2 else 404)

            await asyncio.gather(*(one(n) for n in range(10_000)))

    asyncio.run(hammer())
    text = scrape(server.url)
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(series) <= 500, len(series)
    assert sample(text, "keel_http_request_duration_seconds_count") >= 10_000
    assert not re.search(r"tenant\d|key-\d|[0-9a-f]{8}-[0-9a-f]{4}-", text)


def test_alert_rules_pass_their_unit_tests(promtool):
    rules = ROOT / "deploy" / "prometheus"
    checked = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], cwd=rules, capture_output=True, text=True
    )
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout


def test_the_kubernetes_prometheus_rule_passes_promtool(promtool, tmp_path):
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "k8s")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (rule,) = [d for d in yaml.safe_load_all(rendered) if d["kind"] == "PrometheusRule"]
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rule["spec"]))  # what the operator loads
    shutil.copy(ROOT / "deploy" / "prometheus" / "alerts_test.yml", tmp_path)
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        checked = subprocess.run([promtool, *command], cwd=tmp_path, capture_output=True, text=True)
        assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout


def test_every_dashboard_query_names_an_exported_metric(start_server, data_dir):
    server = start_server(KEEL_DATA_DIR=str(data_dir))
    exported = set(re.findall(r"^# TYPE (\w+) ", scrape(server.url), re.M))
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "keel.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(queries) >= 20
    for expr in queries:
        names = set(re.findall(r"\b(keel_\w+)", expr))
        assert names, expr
        for name in names:
            family = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert name in exported or family in exported, (name, expr)
