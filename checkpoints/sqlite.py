"""The embedded SQLite backend, called inline on the event loop: no thread hop per statement.

LangGraph's synchronous SQLite saver and store, and keel's run store, each on its own `sqlite3`
connection. aiosqlite hands every statement, fetch and cursor close to a thread and back (about
60 microseconds each, ~110 of them in a cache-hit turn); here a statement is a plain call.

Inline is safe because no write transaction is ever held across an `await`: each saver, store
and run-store transaction runs from its first write to COMMIT without suspending, so one
connection never waits (busy timeout) on a lock whose holder needs the event loop to finish.
The store's TTL sweeper is a thread that needs no loop. WAL with `synchronous=NORMAL`: a commit
takes tens of microseconds and survives a process crash (the last ones can be lost on power loss).
The loop's connections never checkpoint the WAL themselves (`WalCheckpointer` does, in a thread):
SQLite's default makes the commit that grows it past 1,000 pages copy it into the database and
fsync, ~8 ms inside that commit, on the loop.
"""

import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.base import Op, Result
from langgraph.store.sqlite import SqliteStore

log = logging.getLogger("keel.sqlite")


def connect(
    path: str | Path, autocommit: bool = True, checkpoints: bool = True
) -> sqlite3.Connection:
    """A connection usable from the loop and the store's sweeper thread; `autocommit` leaves
    BEGIN to the caller (the store and the run store), else sqlite3 opens transactions itself
    (what LangGraph's saver expects). `checkpoints=False` leaves the WAL's checkpoints to a
    `WalCheckpointer` on the same file."""
    conn = sqlite3.connect(
        str(path), check_same_thread=False, isolation_level=None if autocommit else "DEFERRED"
    )
    conn.execute("PRAGMA busy_timeout = 10000")
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if not checkpoints:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


class WalCheckpointer:
    """A thread that checkpoints a database's WAL every `interval_s`, PASSIVE: it copies what no
    reader still needs into the database and never waits for, nor blocks, readers or writers
    (sqlite3 releases the GIL while it works). The next commit after a full checkpoint starts
    the WAL over, so it stays near what `interval_s` of writes fill."""

    def __init__(self, path: Path, interval_s: float = 0.5):
        self._path, self._interval_s = path, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keel-wal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conn = connect(self._path)
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    log.exception("WAL checkpoint of %s failed; retrying", self._path)
        finally:
            conn.close()


class InlineSqliteSaver(SqliteSaver):
    """LangGraph's `SqliteSaver` with its async interface answered by its sync methods."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        # Read whole before yielding: `list` holds the saver's lock while it iterates, and the
        # caller may write between items.
        for item in list(self.list(config, filter=filter, before=before, limit=limit)):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, Any]:
        return self.get_delta_channel_history(config=config, channels=channels)


class InlineSqliteStore(SqliteStore):
    """LangGraph's `SqliteStore` with `abatch` answered by `batch`."""

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return self.batch(ops)
