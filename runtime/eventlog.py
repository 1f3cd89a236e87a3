"""Group commit for a run's event log: the graph never waits on the database to emit an event.

Events are numbered as they are emitted and written by one flusher, in order, as multi-row inserts:
whatever accumulated while the previous write was in flight goes in the next transaction. Followers
are woken only after a write commits, so an event is still logged before any client sees it.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from checkpoints.runs import RunStore
from integrations import metrics


class EventWriter:
    """Appends one run's events through `store`, calling `on_flush` with each committed batch."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        seq: int,
        on_flush: Callable[[list[tuple[int, str, dict[str, Any]]]], None],
    ):
        self.store, self.run_id, self.seq = store, run_id, seq
        self._on_flush = on_flush
        self._pending: list[tuple[int, str, dict[str, Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def emit(self, name: str, data: dict[str, Any]) -> None:
        """Numbers the event and queues it; raises the error of an earlier failed write."""
        self._raise_error()
        self.seq += 1
        self._pending.append((self.seq, name, data))
        self._start()

    async def flush(self) -> None:
        """Waits until every emitted event is committed (raises if a write failed)."""
        while True:
            self._raise_error()
            self._start()
            if self._flusher is None or self._flusher.done():
                return
            await asyncio.shield(self._flusher)

    def _start(self) -> None:
        # One flusher at a time: two concurrent writes could commit out of order.
        if self._pending and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_loop())

    def _raise_error(self) -> None:
        error, self._error = self._error, None  # the unwritten events stay queued for a retry
        if error is not None:
            raise error

    async def _flush_loop(self) -> None:
        try:
            while self._pending:
                await self._write()
        except Exception as exc:  # surfaced to the run by the next emit/flush
            self._error = exc

    async def _write(self) -> None:
        batch, self._pending = self._pending, []
        started = time.perf_counter()
        try:
            await self.store.append_many(self.run_id, batch)
        except BaseException:
            self._pending = batch + self._pending
            raise
        metrics.EVENT_APPEND.observe(time.perf_counter() - started)
        self._on_flush(batch)
