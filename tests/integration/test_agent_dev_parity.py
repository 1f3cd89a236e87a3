"""One official-Python-client script against `langgraph dev` (serving keel's graph) and against
`keel serve`: the same event kinds in the same order, in the embedded configuration both share
(no LLM, an empty corpus: guard, cache, retrieve, fallback).

`values` frames are compared apart: keel sends one per checkpoint (the graph's own `values`
stream), while `langgraph dev` 0.16 sends fewer (after the guard and at the end); both end with
the same final values. Beyond one run: the `tasks` and `checkpoints` modes, `durability`, the
thread-level stream, `POST /runs/batch`, `POST /threads/prune` and semantic store search (both
ranking with keel's MiniLM, see test_studio.py)."""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import NotFoundError

from graph.builder import NODES
from tests.conftest import Server
from tests.integration.test_studio import studio_url  # noqa: F401 (the langgraph dev fixture)

pytestmark = pytest.mark.slow
MODES = ["values", "updates", "custom", "debug"]


@pytest.fixture
def keel_url(tmp_path: Path, postgres_url: str) -> Iterator[str]:
    env = {
        "KEEL_DATABASE_URL": postgres_url,
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "KEEL_STORE_INDEX_FIELDS": "text",
    }
    with Server(env, tmp_path / "server.log") as server:
        yield server.url


async def script(url: str) -> list[tuple[str, str]]:
    """A thread, one streamed turn, its history: (event kind, detail) in order."""
    client = get_client(url=url)
    thread_id = (await client.threads.create())["thread_id"]
    inputs = {"messages": [{"role": "user", "content": "What is the refund policy?"}]}
    kinds = []
    async for part in client.runs.stream(
        thread_id, "keel", input=inputs, stream_mode=MODES, context={"use_cache": False}
    ):
        detail = ""
        if part.event == "updates":
            detail = next(iter(part.data))
        elif part.event == "debug":
            detail = part.data["type"]
        elif part.event == "custom":  # keel's nodes' own progress events, and the fallback's
            detail = f"{part.data.get('node')}:{sorted(part.data)}"
        kinds.append((part.event, detail))
    history = await client.threads.get_history(thread_id, limit=100)
    kinds += [("history", str(h["metadata"]["step"])) for h in history]
    return kinds


async def test_same_event_kinds_in_the_same_order_as_langgraph_dev(
    studio_url: str,  # noqa: F811
    keel_url: str,
) -> None:
    reference, ours = await script(studio_url), await script(keel_url)
    assert ("updates", "fallback") in reference

    def without_values(kinds: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [k for k in kinds if k[0] != "values"]

    assert without_values(ours) == without_values(reference)
    assert next(k for k in ours if k[0] == "custom")[1].startswith("retrieve:")
    assert ours[0] == reference[0] == ("metadata", "")
    # Both send values after the guard and last before the final checkpoint.
    for kinds in (ours, reference):
        after_guard = kinds[kinds.index(("updates", "guard")) + 2]
        assert after_guard == ("values", "")
        assert kinds[kinds.index(("updates", "fallback")) + 2] == ("values", "")


async def old_style_script(url: str) -> list[tuple[str, str]]:
    """One turn streamed in the `messages` and `events` modes (with subgraphs): the whole
    messages, and the chain events of the graph and its nodes, in order. keel also streams its
    answer's tokens (messages/partial, on_chat_model_*) and `langgraph dev` its routing
    functions' chains: both are left out."""
    client = get_client(url=url)
    thread_id = (await client.threads.create())["thread_id"]
    inputs = {"messages": [{"role": "user", "content": "What is the refund policy?"}]}
    kinds, completed = [], set()
    parts = [
        p
        async for p in client.runs.stream(
            thread_id,
            "keel",
            input=inputs,
            stream_mode=["messages", "events"],
            stream_subgraphs=True,
            context={"use_cache": False},
        )
    ]
    completed = {m["id"] for p in parts if p.event == "messages/complete" for m in p.data}
    for part in parts:
        if part.event == "messages/complete":
            kinds += [(part.event, m["content"]) for m in part.data]
        elif part.event == "messages/metadata" and set(part.data) <= completed:
            kinds.append((part.event, next(iter(part.data.values()))["metadata"]["langgraph_node"]))
        elif part.event == "events" and part.data["name"] in ("keel", *NODES):
            kinds.append((part.data["event"], part.data["name"]))
    return kinds


async def test_messages_and_events_modes_match_langgraph_dev(
    studio_url: str,  # noqa: F811
    keel_url: str,
) -> None:
    reference, ours = await old_style_script(studio_url), await old_style_script(keel_url)
    assert ("messages/metadata", "fallback") in reference
    assert reference[0] == ("on_chain_start", "keel") and reference[-1] == ("on_chain_end", "keel")
    assert ours == reference, (ours, reference)


INPUT = {"messages": [{"role": "user", "content": "What is the refund policy?"}]}
FRESH = {"use_cache": False}


def _shape(value: Any) -> Any:
    """A JSON value's shape: its keys (recursively) and the types of its leaves."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


async def tasks_and_checkpoints_script(url: str) -> list[tuple[str, str, Any]]:
    client = get_client(url=url)
    thread_id = (await client.threads.create())["thread_id"]
    kinds = []
    async for part in client.runs.stream(
        thread_id, "keel", input=INPUT, stream_mode=["tasks", "checkpoints"], context=FRESH
    ):
        if part.event == "tasks":
            phase = "start" if "input" in part.data else "result"
            kinds.append((part.event, f"{part.data['name']}:{phase}", sorted(part.data)))
        elif part.event == "checkpoints":
            kinds.append((part.event, str(part.data["next"]), sorted(part.data)))
    return kinds


async def test_tasks_and_checkpoints_modes_match_langgraph_dev(
    studio_url: str,  # noqa: F811
    keel_url: str,
) -> None:
    reference = await tasks_and_checkpoints_script(studio_url)
    ours = await tasks_and_checkpoints_script(keel_url)
    assert ("tasks", "fallback:result", ["error", "id", "interrupts", "name", "result"]) in ours
    assert ours == reference, (ours, reference)


async def durability_script(url: str) -> dict[str, int]:
    """How many checkpoints a turn leaves in each durability mode."""
    client = get_client(url=url)
    counts = {}
    for mode in ("sync", "async", "exit"):
        thread_id = (await client.threads.create())["thread_id"]
        await client.runs.wait(thread_id, "keel", input=INPUT, durability=mode, context=FRESH)
        counts[mode] = len(await client.threads.get_history(thread_id, limit=100))
    return counts


async def test_durability_matches_langgraph_dev(
    studio_url: str,  # noqa: F811
    keel_url: str,
) -> None:
    reference, ours = await durability_script(studio_url), await durability_script(keel_url)
    assert ours["exit"] < ours["sync"] == ours["async"]
    assert ours == reference


async def thread_stream_script(url: str) -> list[tuple[str, Any]]:
    """A thread stream joined before a run: its frames' kinds and shapes up to `run_done`."""
    client = get_client(url=url)
    thread_id = (await client.threads.create())["thread_id"]

    async def joined() -> list[Any]:
        parts = []
        async for part in await client.threads.join_stream(thread_id):
            parts.append(part)
            if part.event == "metadata" and part.data.get("status") == "run_done":
                return parts
        raise AssertionError(parts)

    stream = asyncio.ensure_future(joined())
    await asyncio.sleep(1)  # joined before the run starts
    await client.runs.create(thread_id, "keel", input=INPUT, stream_mode="updates", context=FRESH)
    parts = await asyncio.wait_for(stream, 120)
    return [
        (p.event, next(iter(p.data)) if p.event == "updates" else _shape(p.data)) for p in parts
    ]


async def test_thread_stream_matches_langgraph_dev(
    studio_url: str,  # noqa: F811
    keel_url: str,
) -> None:
    reference, ours = await thread_stream_script(studio_url), await thread_stream_script(keel_url)
    assert ours[-1] == ("metadata", {"run_id": "str", "status": "str"})
    assert ours == reference, (ours, reference)


async def batch_and_prune_script(url: str) -> dict[str, Any]:
    client = get_client(url=url)
    runs = await client.runs.create_batch(
        [{"assistant_id": "keel", "input": INPUT}, {"assistant_id": "keel", "input": INPUT}]
    )
    threads = [(await client.threads.create())["thread_id"] for _ in range(2)]
    pruned = await client.threads.prune([*threads, str(uuid.uuid4())])
    gone = []
    for thread_id in threads:
        try:
            await client.threads.get(thread_id)
        except NotFoundError:
            gone.append(thread_id)
    return {
        "runs": [sorted(run) for run in runs],
        "statuses": {run["status"] for run in runs} <= {"pending", "running"},
        "assistants": [run["assistant_id"] for run in runs],
        "pruned": pruned,
        "gone": len(gone),
    }


async def test_batch_and_prune_match_langgraph_dev(
    studio_url: str,  # noqa: F811
    keel_url: str,
) -> None:
    reference = await batch_and_prune_script(studio_url)
    ours = await batch_and_prune_script(keel_url)
    assert ours["pruned"] == {"pruned_count": 2} and ours["gone"] == 2
    # The reference names each run's LangSmith tracing project; keel traces per deployment.
    reference["runs"] = [
        [k for k in run if k != "langsmith_session_name"] for run in reference["runs"]
    ]
    assert ours == reference, (ours, reference)


STORE_ITEMS = {
    "checkpoints": "Postgres keeps the checkpoints of every conversation thread.",
    "vectors": "Chroma holds the dense vectors that retrieval searches.",
    "cache": "Redis caches answers so replicas reuse them.",
}


async def store_script(url: str) -> list[list[tuple[str, float]]]:
    """Items indexed on `text`, ranked for three questions: (key, score) best first."""
    store = get_client(url=url).store
    namespace = ["parity", uuid.uuid4().hex[:8]]
    for key, text in STORE_ITEMS.items():
        await store.put_item(namespace, key, {"text": text, "len": len(text)})
    rankings = []
    for question in ("Where are thread checkpoints kept?", "caching answers", "dense vectors"):
        found = await store.search_items(namespace, query=question, limit=3)
        rankings.append([(i["key"], round(i["score"], 3)) for i in found["items"]])
    return rankings


async def test_semantic_store_search_matches_langgraph_dev(
    studio_url: str,  # noqa: F811
    keel_url: str,
) -> None:
    reference, ours = await store_script(studio_url), await store_script(keel_url)
    assert [r[0][0] for r in ours] == ["checkpoints", "cache", "vectors"]
    assert ours == reference, (ours, reference)
