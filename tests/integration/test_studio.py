"""`langgraph dev` serves the graph `langgraph.json` points at, offline, and the guard redacts PII.

Starts the real LangGraph dev server (in-memory runtime) as a subprocess, in the embedded default
configuration (no LLM, SQLite cache, Chroma under a temp `KEEL_DATA_DIR`), and drives it over HTTP
the way Studio does: the user's message arrives in `input.messages`.
"""

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.process import ServerProcess, free_port

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAPH_ID = "keel"
STARTUP_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 120.0
RAW_EMAIL = "jane.doe@example.org"

# Env that could phone home, change the graph's configuration, or pick up a developer's stores.
_SCRUBBED_PREFIXES = ("KEEL_", "LANGSMITH_", "LANGCHAIN_", "OPENAI_")


def _langgraph_cli() -> str:
    """The `langgraph` executable of this interpreter's environment."""
    candidate = Path(sys.executable).with_name("langgraph")
    found = str(candidate) if candidate.exists() else shutil.which("langgraph")
    if found is None:
        pytest.skip("langgraph-cli[inmem] is not installed (pip install -e '.[dev]')")
    return found


def _config_for(workdir: Path) -> Path:
    """The repo's langgraph.json with paths made absolute, so the server can run in `workdir`.

    Running outside the repo keeps the dev server's `.langgraph_api/` files (which hold run inputs)
    and any developer `.env` out of the test.
    """
    config = json.loads((REPO_ROOT / "langgraph.json").read_text())
    config["dependencies"] = [
        str((REPO_ROOT / dep).resolve()) if dep.startswith(".") else dep
        for dep in config["dependencies"]
    ]
    graphs = {}
    for graph_id, spec in config["graphs"].items():
        path, _, attr = spec.rpartition(":")
        graphs[graph_id] = f"{(REPO_ROOT / path).resolve()}:{attr}"
    config["graphs"] = graphs
    # Its store ranks semantic search with keel's MiniLM over `text`, as `keel serve` does with
    # KEEL_STORE_INDEX_FIELDS=text (compared in test_agent_dev_parity.py).
    embed = f"{(REPO_ROOT / 'integrations' / 'embeddings.py').resolve()}:embed_texts"
    config["store"] = {"index": {"dims": 384, "embed": embed, "fields": ["text"]}}
    target = workdir / "langgraph.json"
    target.write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a `langgraph dev` server over this repo's graph, stopped after the module."""
    cli = _langgraph_cli()
    workdir = tmp_path_factory.mktemp("studio")
    config = _config_for(workdir)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(
        KEEL_DATA_DIR=str(workdir / "data"),
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        HF_HUB_OFFLINE="1",
    )
    command = [cli, "dev", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-browser", "--no-reload"]
    log = workdir / "langgraph-dev.log"
    try:
        server = ServerProcess(
            command, port, env, log, ready_path="/ok", timeout_s=STARTUP_TIMEOUT_S, cwd=workdir
        )
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with server:
        yield server.url


def _run_turn(client: httpx.Client, content: str) -> tuple[str, dict[str, Any]]:
    """Creates a thread and runs one turn as Studio does; returns the thread id and the output."""
    thread = client.post("/threads", json={})
    assert thread.status_code == 200, thread.text
    thread_id = thread.json()["thread_id"]
    run = client.post(
        f"/threads/{thread_id}/runs/wait",
        json={
            "assistant_id": GRAPH_ID,
            "input": {"messages": [{"role": "user", "content": content}]},
        },
    )
    assert run.status_code == 200, run.text
    return thread_id, run.json()


def test_studio_run_answers_and_checkpoints_only_the_redacted_message(studio_url: str) -> None:
    with httpx.Client(base_url=studio_url, timeout=RUN_TIMEOUT_S) as client:
        assistants = client.post("/assistants/search", json={"graph_id": GRAPH_ID}).json()
        assert [a["graph_id"] for a in assistants] == [GRAPH_ID]

        thread_id, output = _run_turn(
            client, f"Please email {RAW_EMAIL} what vitamin D does for bone density."
        )

        assert "__error__" not in output, output
        assert isinstance(output["answer"], str) and output["answer"].strip()
        # Empty corpus, no LLM: the fallback answers "not found", which is no failure.
        assert output["found"] is False and output["degraded"] == []
        assert output["cached"] is False and output["citations"] == []

        runs = client.get(f"/threads/{thread_id}/runs").json()
        assert [r["status"] for r in runs] == ["success"]

        state = client.get(f"/threads/{thread_id}/state").json()
        assert state["next"] == []
        values = state["values"]
        messages = values["messages"]
        assert [m["type"] for m in messages] == ["human", "ai"]
        assert "<EMAIL_ADDRESS>" in messages[0]["content"]
        assert messages[1]["content"] == output["answer"]
        assert values["guard"]["redactions"] == {"EMAIL_ADDRESS": 1}
        assert RAW_EMAIL not in json.dumps(values)

        # Studio sends the raw text in `input.messages`, so the server's input checkpoints (steps -1
        # and 0, before the guard runs) hold it; from the guard's step on, only the redacted form.
        history = client.post(f"/threads/{thread_id}/history", json={"limit": 50}).json()
        after_guard = [c for c in history if c["metadata"]["step"] >= 1]
        assert after_guard, history
        assert all(RAW_EMAIL not in json.dumps(c["values"]) for c in after_guard)


def test_studio_gets_the_graph_input_and_output_schemas(studio_url: str) -> None:
    # Studio builds its input form from these; typing.TypedDict state made the server log
    # "Failed to get input schema" and send none.
    with httpx.Client(base_url=studio_url, timeout=RUN_TIMEOUT_S) as client:
        assistant = client.post("/assistants/search", json={"graph_id": GRAPH_ID}).json()[0]
        schemas = client.get(f"/assistants/{assistant['assistant_id']}/schemas")
    assert schemas.status_code == 200, schemas.text
    body = schemas.json()
    assert list(body["input_schema"]["properties"]) == ["messages"]
    assert {"answer", "citations", "cached", "degraded"} <= set(body["output_schema"]["properties"])
