"""Graph-level fixtures: the real compiled graph over the real corpus, in-memory checkpoints."""

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.memory import InMemorySaver

from graph.builder import build_graph
from graph.context import Context
from graph.deps import Deps
from graph.settings import Settings
from integrations.cache_stores import SqliteCacheStore


class Harness:
    """Builds a graph and runs turns, collecting node names, tokens and the final state."""

    def __init__(
        self,
        data_dir: Path,
        cache_dir: Path,
        chat_models: list[BaseChatModel] | None = None,
        **settings: Any,
    ):
        self.settings = Settings(data_dir=data_dir, **settings)
        self.deps = Deps.from_settings(self.settings, chat_models or [])
        # The corpus is shared and read-only; each harness gets its own answer cache.
        self.deps.cache = SqliteCacheStore(cache_dir / "cache.sqlite")
        self.graph = build_graph(self.deps, InMemorySaver())

    async def turn(self, message: str | None, thread_id: str = "t", **knobs: Any) -> dict[str, Any]:
        context = Context(user_message=message, **knobs)
        config = {"configurable": {"thread_id": thread_id}}
        nodes, tokens, errors, progress = [], [], [], []
        async for part in self.graph.astream(
            {"messages": []}, config, context=context, stream_mode=["tasks", "custom"], version="v2"
        ):
            data = part["data"]
            if part["type"] == "custom" and "token" in data:
                tokens.append(data["token"])
            elif part["type"] == "custom":  # a node's progress event
                progress.append(data)
            elif "input" in data:
                nodes.append(data["name"])
            elif data.get("error") is not None:
                errors.append((data["name"], data["error"]))
        state = (await self.graph.aget_state(config)).values
        return {
            "nodes": nodes,
            "tokens": tokens,
            "errors": errors,
            "progress": progress,
            "state": state,
        }

    async def aclose(self) -> None:
        await self.deps.aclose()


@pytest.fixture
async def harness(corpus_dir: Path, tmp_path: Path):
    """A factory of harnesses over the shared, read-only corpus (or a `data_dir` of the test's)."""
    made: list[Harness] = []

    def make(
        chat_models: list[BaseChatModel] | None = None,
        data_dir: Path | None = None,
        **settings: Any,
    ) -> Harness:
        cache_dir = tmp_path / f"harness-{len(made)}"
        h = Harness(data_dir or corpus_dir, cache_dir, chat_models, **settings)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.aclose()
