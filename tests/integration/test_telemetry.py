"""Telemetry of real servers: OTLP/HTTP traces decoded at a loopback receiver (one trace per run,
across replicas too), JSON log lines joined to them, and seeded PII absent from logs, spans and
metrics; LangSmith payloads redacted; no outbound connection when nothing is configured."""

import concurrent.futures
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from tests.collectors import LangSmithReceiver, OtlpReceiver
from tests.integration.test_drain import replicas, stream
from tests.integration.test_runs import llm_env

EMAIL, PHONE, CARD = "jane.roe@example.com", "415-555-0132", "4111 1111 1111 1111"
QUESTION = (
    f"I am {EMAIL}, phone {PHONE}, card {CARD}. "
    "How does keel avoid duplicate chunks when the same file is ingested twice?"
)
SEEDED = (EMAIL, PHONE, CARD, CARD.replace(" ", ""))


def wait_for(check: Callable[[], Any], timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


def json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_a_turn_is_one_trace_with_genai_spans_and_logs_carry_its_ids(
    start_server, postgres_url, data_dir, fake_llm_url
):
    receiver = OtlpReceiver()
    server = start_server(
        **llm_env(postgres_url, data_dir, fake_llm_url, "slow-1-8"),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        tid = client.post("/v1/threads").json()["thread_id"]
        body = {"message": QUESTION, "context": {"use_cache": False}}
        headers = {"X-Request-ID": "req-telemetry-1"}
        url = f"/v1/threads/{tid}/runs/stream"
        with connect_sse(client, "POST", url, json=body, headers=headers) as src:
            assert src.response.headers["x-request-id"] == "req-telemetry-1"
            events = [(e.event, json.loads(e.data)) for e in src.iter_sse()]
        assert events[-1][0] == "run.finished"
        run_id = events[-1][1]["run_id"]
        scrape = client.get("/metrics").text

    def finished() -> list[dict[str, Any]]:
        # The run span ends after the stream's last byte (the run task closes it), so it can
        # come in a later export batch than the HTTP span: wait for both.
        spans = receiver.spans()
        names = {s["name"] for s in spans}
        wanted = {"POST /v1/threads/{thread_id}/runs/stream", "invoke_agent keel"}
        return spans if wanted <= names else []

    spans = wait_for(finished)
    receiver.close()
    http = next(s for s in spans if s["name"] == "POST /v1/threads/{thread_id}/runs/stream")
    assert http["kind"] == 2 and http["attributes"]["http.response.status_code"] == 200  # SERVER
    turn = {s["name"]: s for s in spans if s["trace_id"] == http["trace_id"]}
    run = turn["invoke_agent keel"]
    assert run["attributes"]["keel.run.id"] == run_id
    assert run["attributes"]["gen_ai.conversation.id"] == tid
    for node in ("guard", "cache_lookup", "retrieve", "rerank", "generate"):
        assert turn[node]["parent_id"] == run["span_id"], node
    assert turn["retrieval keel"]["parent_id"] == turn["retrieve"]["span_id"]
    chat = turn["chat slow-1-8"]
    assert chat["kind"] == 3 and chat["parent_id"] == turn["generate"]["span_id"]  # CLIENT
    assert chat["attributes"]["gen_ai.operation.name"] == "chat"
    assert chat["attributes"]["gen_ai.provider.name"] == "openai"
    assert chat["attributes"]["gen_ai.request.model"] == "slow-1-8"
    assert chat["attributes"]["server.address"] == "127.0.0.1"
    assert chat["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    assert "gen_ai.input.messages" not in chat["attributes"]  # content is opt-in

    probes = ("/metrics", "/health", "/ready", "/readyz", "/livez")
    assert not [s for s in spans if s["attributes"].get("url.path") in probes]
    lines = json_lines(server.log)
    assert not [line for line in lines if line.get("route") in probes]  # healthy probes are quiet
    request = next(line for line in lines if line.get("request_id") == "req-telemetry-1")
    assert request["message"] == "request" and request["status"] == 200
    assert request["route"] == "/v1/threads/{thread_id}/runs/stream"
    assert request["trace_id"] == http["trace_id"] and request["span_id"] == http["span_id"]
    ended = next(line for line in lines if line["message"] == "run ended")
    assert ended["run_id"] == run_id and ended["outcome"] == "succeeded"
    assert ended["tenant_hash"] == hashlib.sha256(b"default").hexdigest()[:12]
    assert ended["trace_id"] == http["trace_id"]
    everything = {"log": server.log.read_text(), "spans": json.dumps(spans), "metrics": scrape}
    for where, text in everything.items():
        for seeded in SEEDED:
            assert seeded not in text, (where, seeded)


def test_a_run_resumed_on_another_replica_stays_in_its_trace(
    start_servers, postgres_url, data_dir, fake_llm_url, tmp_path
):
    receiver = OtlpReceiver()
    model = f"slow-100-30+trace{time.time_ns()}"  # ~3 s of tokens
    a, b = replicas(
        start_servers,
        postgres_url,
        data_dir,
        fake_llm_url,
        tmp_path,
        model,
        KEEL_DRAIN_TIMEOUT="0.3",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    tid = httpx.post(f"{a.url}/v1/threads").json()["thread_id"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = concurrent.futures.Future()
        cut = pool.submit(stream, a.url, tid, first)
        first.result(timeout=30)
        os.kill(a.proc.pid, signal.SIGTERM)  # past the drain timeout: handed to b
        events, _ = cut.result(timeout=60)
    run_id = events[0][2]["run_id"]
    with connect_sse(
        httpx.Client(timeout=60),
        "GET",
        f"{b.url}/v1/threads/{tid}/runs/{run_id}/stream",
        headers={"Last-Event-ID": events[-1][0]},
    ) as src:
        assert [e.event for e in src.iter_sse()][-1] == "run.finished"

    def both() -> list[dict[str, Any]]:
        runs = [s for s in receiver.spans() if s["name"] == "invoke_agent keel"]
        return runs if len(runs) == 2 else []

    first_run, resumed = wait_for(both)
    receiver.close()
    assert first_run["trace_id"] == resumed["trace_id"]
    instances = {s["resource"]["service.instance.id"] for s in (first_run, resumed)}
    assert len(instances) == 2  # executed on two replicas, one trace
    assert {s["attributes"]["keel.run.id"] for s in (first_run, resumed)} == {run_id}


def test_langsmith_gets_redacted_payloads_only(start_server, postgres_url, data_dir, fake_llm_url):
    receiver = LangSmithReceiver()
    server = start_server(
        **llm_env(postgres_url, data_dir, fake_llm_url, "slow-1-8"),
        LANGSMITH_TRACING="true",
        LANGSMITH_ENDPOINT=receiver.url,
        LANGSMITH_API_KEY="lsv2-test",
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        tid = client.post("/v1/threads").json()["thread_id"]
        body = {"message": QUESTION, "context": {"use_cache": False}}
        response = client.post(f"/v1/threads/{tid}/runs/wait", json=body)
        assert response.status_code == 200
    text = wait_for(lambda: "generate" in receiver.text() and receiver.text())
    receiver.close()
    assert any(path.startswith("/runs") for path in receiver.posted()), receiver.posted()
    assert "<EMAIL_ADDRESS>" in text  # the redacted question went out
    for seeded in SEEDED:
        assert seeded not in text, seeded


GUARD = """
import os, socket
_log = os.environ["KEEL_SOCKET_LOG"]
_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")
open(_log + ".loaded", "w").close()

def _check(address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not host.startswith(_LOCAL) and not host.startswith("/"):
        with open(_log, "a") as out:
            out.write(f"{host}\\n")

_connect = socket.socket.connect
def connect(self, address):
    _check(address)
    return _connect(self, address)
socket.socket.connect = connect

_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    _check((host,))
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
"""


def test_nothing_configured_opens_no_outbound_connection(
    start_server, postgres_url, data_dir, tmp_path
):
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    attempts = tmp_path / "outbound.log"
    clean = {
        k: v for k, v in os.environ.items() if k.startswith(("LANGSMITH_", "LANGCHAIN_", "OTEL_"))
    }
    for name in clean:
        os.environ.pop(name)
    try:
        server = start_server(
            KEEL_DATABASE_URL=postgres_url,
            KEEL_DATA_DIR=str(data_dir),
            KEEL_SOCKET_LOG=str(attempts),
            PYTHONPATH=str(guard),
        )
    finally:
        os.environ.update(clean)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        tid = client.post("/v1/threads").json()["thread_id"]
        body = {"message": QUESTION, "context": {"use_cache": False}}
        assert client.post(f"/v1/threads/{tid}/runs/wait", json=body).status_code == 200
        files = {"files": ("note.md", b"# Note\nThe harbor light is green.\n", "text/markdown")}
        assert client.post("/v1/documents", files=files).status_code in (200, 201)
        assert client.get("/metrics").status_code == 200
    server.stop()
    assert Path(f"{attempts}.loaded").exists()  # the guard was in place
    assert not attempts.exists(), attempts.read_text()
