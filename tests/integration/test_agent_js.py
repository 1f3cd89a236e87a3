"""The official JavaScript client (`@langchain/langgraph-sdk` from npm, under Node) against a
real `keel serve` on Postgres: runs.stream, joinStream with a last event id (also on another
replica), threads.getHistory, threads.updateState, runs.delete. `npm ci` installs the locked
client into tests/js/ when it is missing."""

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, llm_server
from tests.integration.test_runs import replicas  # noqa: F401 (the two-replica fixture)

JS_DIR = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="session")
def js_client() -> Path:
    """tests/js with its locked node_modules (installed once with `npm ci`)."""
    if not (JS_DIR / "node_modules" / "@langchain" / "langgraph-sdk").exists():
        npm = shutil.which("npm")
        assert npm, "node and npm are needed for the JS client tests"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True)
    return JS_DIR


@pytest.fixture
def server(
    tmp_path: Path, corpus_dir: Path, postgres_url: str, fake_llm_url: str
) -> Iterator[Server]:
    with llm_server(
        tmp_path, corpus_dir, fake_llm_url, postgres_url, KEEL_LLM_MODEL="slow-5-12"
    ) as started:
        yield started


def test_official_js_client(js_client: Path, server: Server) -> None:
    node = shutil.which("node")
    assert node, "node is needed for the JS client tests"
    done = subprocess.run(
        [node, "conformance.mjs", server.url],
        cwd=js_client,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    streamed, run_id = report["streamed"], report["runId"]

    assert streamed[0]["event"] == "metadata" and streamed[0]["data"]["run_id"] == run_id
    updates = [next(iter(p["data"])) for p in streamed if p["event"] == "updates"]
    assert updates == ["guard", "cache_lookup", "retrieve", "rerank", "generate"]
    tokens = [p["data"] for p in streamed if p["event"] == "messages"]
    assert len(tokens) == 12 and {meta["langgraph_node"] for _, meta in tokens} == {"generate"}
    # joinStream from the 4th frame's id: exactly the frames after it.
    assert report["rejoined"] == streamed[report["cut"] + 1 :]

    history = report["history"]
    assert history[0]["values"]["answer"] == "".join(chunk["content"] for chunk, _ in tokens)
    assert history[-1]["metadata"]["source"] == "input"
    assert report["update"]["checkpoint"]["thread_id"] == report["threadId"]
    state = report["state"]
    assert state["values"]["answer"] == "edited by js"
    assert state["parent_checkpoint"] == history[0]["checkpoint"]
    assert state["metadata"]["source"] == "update"


def test_official_js_client_across_replicas(js_client: Path, replicas) -> None:  # noqa: F811
    node = shutil.which("node")
    assert node, "node is needed for the JS client tests"
    a, b = replicas
    done = subprocess.run(
        [node, "replicas.mjs", a.url, b.url],
        cwd=js_client,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    seen, rest, whole = report["seen"], report["rest"], report["whole"]

    # joinStream on B from the last frame A delivered: exactly the rest, no gap, no repeat.
    assert seen + rest == whole and whole[0]["event"] == "metadata"
    assert whole[0]["data"]["run_id"] == report["runId"]
    seqs = [int(f["id"].rsplit(":", 1)[1]) for f in whole]
    assert seqs == sorted(set(seqs))
    assert sum(1 for f in whole if f["event"] == "messages") == 40

    assert report["whileRunning"] == 409 and report["afterDelete"] == 404
    assert report["deletedRunId"] not in report["runs"] and report["runId"] in report["runs"]
