"""The semantic cache through a real `keel serve` (embedded stores, API keys, no LLM: extractive
answers): a paraphrase is served from the cache, a contrast question runs the whole graph, and
a tenant never gets another tenant's cached answer."""

import json
import uuid
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from api.auth import hash_key

DOC = (
    "# Salmon notes\n\nAtlantic salmon stay in freshwater for two to three years before they "
    "migrate to the sea. After migrating to the sea, Atlantic salmon feed for one to four years "
    "before returning to spawn."
)
QUESTION = "How long do Atlantic salmon stay in freshwater before they migrate to the sea?"
PARAPHRASE = "Before they migrate to the sea, how long do Atlantic salmon stay in freshwater?"
CONTRAST = "How long do Atlantic salmon stay in freshwater after they migrate to the sea?"


def turn(client: httpx.Client, headers: dict[str, str], message: str) -> dict[str, dict]:
    """Streams one turn on a new thread: the cache node's summary and run.finished."""
    tid = client.post("/v1/threads", headers=headers).json()["thread_id"]
    with connect_sse(
        client,
        "POST",
        f"/v1/threads/{tid}/runs/stream",
        json={"message": message},
        headers=headers,
    ) as source:
        assert source.response.status_code == 200
        events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
    finished = {d["node"]: d for name, d in events if name == "node.finished"}
    (result,) = [d for name, d in events if name == "run.finished"]
    return {"cache": finished["cache_lookup"]["summary"], "result": result, "nodes": finished}


def test_paraphrase_hits_contrast_runs_and_tenants_are_apart(start_server, tmp_path: Path):
    keys = {n: f"key-{n}-{uuid.uuid4().hex}" for n in ("a", "b")}
    server = start_server(
        KEEL_DATA_DIR=str(tmp_path / "data"),
        KEEL_API_KEYS=json.dumps({hash_key(k): f"cache{n}" for n, k in keys.items()}),
    )
    a, b = {"X-API-Key": keys["a"]}, {"X-API-Key": keys["b"]}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for headers in (a, b):  # the same document in each tenant's own corpus
            upload = client.post(
                "/v1/documents",
                files={"files": ("salmon.md", DOC.encode(), "text/markdown")},
                headers=headers,
            )
            assert upload.status_code == 201, upload.text

        first = turn(client, a, QUESTION)
        assert first["result"]["cached"] is False and first["result"]["answer"]
        assert first["result"]["degraded"] == [] and first["result"]["cache"] is None

        again = turn(client, a, PARAPHRASE)
        assert set(again["nodes"]) == {"guard", "cache_lookup"}
        assert again["cache"]["hit"] is True and again["cache"]["kind"] == "semantic"
        assert 0.85 <= again["cache"]["similarity"] < 1
        assert again["result"]["cached"] is True
        assert again["result"]["cache"] == again["cache"]
        assert again["result"]["answer"] == first["result"]["answer"]

        contrast = turn(client, a, CONTRAST)
        assert contrast["cache"]["hit"] is False and contrast["cache"]["rejected"] == "comparatives"
        assert "generate" in contrast["nodes"] and contrast["result"]["cached"] is False

        exact = turn(client, a, QUESTION.upper())
        assert exact["result"]["cache"] == {"hit": True, "kind": "exact", "similarity": 1.0}

        other = turn(client, b, QUESTION)  # A's very question: never A's cached answer
        assert other["result"]["cached"] is False and "retrieve" in other["nodes"]
        assert turn(client, b, PARAPHRASE)["result"]["cache"]["kind"] == "semantic"  # B's own
