"""One official-Python-client script against `langgraph dev` (serving keel's graph) and against
`keel serve`: the same event kinds in the same order, in the embedded configuration both share
(no LLM, an empty corpus: guard, cache, retrieve, fallback).

`values` frames are compared apart: keel sends one per checkpoint (the graph's own `values`
stream), while `langgraph dev` 0.16 sends fewer (after the guard and at the end); both end with
the same final values."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client

from graph.builder import NODES
from tests.conftest import Server
from tests.integration.test_studio import studio_url  # noqa: F401 (the langgraph dev fixture)

pytestmark = pytest.mark.slow
MODES = ["values", "updates", "custom", "debug"]


@pytest.fixture
def keel_url(tmp_path: Path, postgres_url: str) -> Iterator[str]:
    env = {"KEEL_DATABASE_URL": postgres_url, "KEEL_DATA_DIR": str(tmp_path / "data")}
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
