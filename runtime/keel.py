"""The application container: what a replica builds once at start-up and closes at shutdown."""

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph.state import CompiledStateGraph

from checkpoints import Persistence, open_persistence
from checkpoints.crypto import build_serde
from corpus import Corpora
from graph.builder import build_graph
from graph.deps import Deps
from graph.settings import Settings
from integrations import tracing
from runtime.limits import Limiter
from runtime.runner import RunManager

log = logging.getLogger("keel")
# Background sentence embedding: after this many seconds without a run, this many chunks per
# step (~0.25 s of both cores, so a run arriving meanwhile waits little), and once every chunk
# has its vectors, a look every WARM_DONE_S. While runs go on, only the chunks queries scored
# cold, one chunk every WARM_BUSY_S (a few percent of a core).
WARM_AFTER_IDLE_S, WARM_CHUNKS, WARM_DONE_S, WARM_BUSY_S = 2.0, 4, 5.0, 0.5


@dataclass
class Keel:
    """What a replica builds once: settings, clients, persistence, the compiled graph, limits
    and the run manager."""

    settings: Settings
    deps: Deps
    persistence: Persistence
    graph: CompiledStateGraph[Any, Any, Any, Any]
    limiter: Limiter
    runs: RunManager = field(init=False)


@asynccontextmanager
async def open_keel(
    settings: Settings, chat_models: list[BaseChatModel] | None = None
) -> AsyncIterator[Keel]:
    """Builds the replica's `Keel`, starts its run manager and background sentence embedding,
    and closes everything in reverse order."""
    limiter = Limiter(settings)
    deps = Deps.from_settings(settings, chat_models)
    tracing.configure()
    try:
        serde = build_serde(settings)
        async with open_persistence(
            settings.checkpoint_url,
            serde=serde,
            pool_max=settings.pool_max,
            pools=(settings.workers, settings.replicas),
        ) as persistence:
            graph = build_graph(deps, persistence.saver)
            keel = Keel(settings, deps, persistence, graph, limiter)
            keel.runs = RunManager(keel)
            await keel.runs.start()
            warmer = asyncio.create_task(_warm_sentences(deps.corpora, keel.runs))
            log.info(
                "keel ready: checkpoints=%s, llm=%s",
                persistence.kind,
                "configured" if deps.llm.models else "extractive",
            )
            try:
                yield keel
            finally:
                warmer.cancel()
                await asyncio.gather(warmer, return_exceptions=True)
                await keel.runs.stop()
    finally:
        await deps.aclose()
        await limiter.aclose()
        tracing.shutdown()


def _lowest_priority() -> None:
    """Nice 19 for the calling thread (on Linux, niceness is per thread): spare CPU only."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


async def _warm_sentences(corpora: Corpora, runs: RunManager) -> None:
    """Embeds the sentence vectors of chunks (rerank and extractive answers then find them
    stored), a few at a time: all of them while this replica runs nothing (on two cores, warming
    everything beside live runs doubled their latency), and meanwhile the chunks queries scored
    cold, which queries will likely want again (a cold chunk costs model time every turn). Its
    thread runs at the lowest CPU priority: a step (~70 ms for one SciFact abstract) no longer
    holds up the turns that overlap it."""
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(1, "keel-warm", initializer=_lowest_priority)
    try:
        while True:
            busy = runs.idle_s() < WARM_AFTER_IDLE_S
            try:
                step = partial(corpora.warm_step, 1 if busy else WARM_CHUNKS, busy)
                done = await loop.run_in_executor(executor, step)
            except Exception:
                log.exception("background sentence embedding failed; retrying")
                done = 0
            await asyncio.sleep(WARM_BUSY_S if busy else 0 if done else WARM_DONE_S)
    finally:  # a step under way ends before the stores it writes to are closed
        await asyncio.to_thread(executor.shutdown, cancel_futures=True)
