"""LangGraph's Postgres saver with fewer round trips per step and no saver-wide lock.

- LangGraph's `AsyncPostgresSaver` serialises every call through one `asyncio.Lock` (it may hold a
  single shared connection); keel always gives it a pool, so each call takes its own connection
  and concurrent runs checkpoint concurrently.
- A step's channel blobs and a task's writes are one multi-row INSERT each (LangGraph sends one
  statement per row: ~60 statements a turn), serialised on the loop (no thread hop per call:
  values are a turn's messages and passages, microseconds to serialise).
- With `sealed`, primitive channel values (the question, the answer) are stored as serialized,
  encrypted blobs instead of inline in the `checkpoints` JSONB column (`checkpoints.crypto`).
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from checkpoints.crypto import seal_inline_values

_ROWS = 1000  # rows per INSERT, under Postgres's 65,535 bound parameters


class PostgresSaver(AsyncPostgresSaver):
    """See the module docstring; `sealed` needs `serde` (keel's encrypting serializer)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[DictRow]],
        serde: SerializerProtocol | None = None,
        sealed: bool = False,
    ):
        super().__init__(pool, serde=serde)
        self.pool, self.sealed = pool, sealed

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        async with self.pool.connection() as conn:
            if pipeline:
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            else:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self.sealed:
            checkpoint = seal_inline_values(checkpoint)
        configurable = config["configurable"]
        thread_id, checkpoint_ns = configurable["thread_id"], configurable["checkpoint_ns"]
        # As LangGraph's: primitive values inline in the checkpoint's JSONB, the rest as blobs.
        inline = dict(checkpoint["channel_values"])
        blobs: dict[str, Any] = {}
        for channel, value in checkpoint["channel_values"].items():
            if isinstance(value, _DeltaSnapshot):
                blobs[channel] = inline.pop(channel)
                inline[channel] = True
            elif not (value is None or isinstance(value, (str, int, float, bool))):
                blobs[channel] = inline.pop(channel)
        versions = {k: v for k, v in new_versions.items() if k in blobs}
        async with self._cursor(pipeline=True) as cur:
            await _insert(
                cur,
                "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, "
                "blob) VALUES {rows} ON CONFLICT (thread_id, checkpoint_ns, channel, version) "
                "DO NOTHING",
                self._dump_blobs(thread_id, checkpoint_ns, blobs, versions),
            )
            await cur.execute(
                self.UPSERT_CHECKPOINTS_SQL,
                (
                    thread_id,
                    checkpoint_ns,
                    checkpoint["id"],
                    configurable.get("checkpoint_id"),
                    Jsonb({**checkpoint, "channel_values": inline}),
                    Jsonb(get_serializable_checkpoint_metadata(config, metadata)),
                ),
            )
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if all(channel in WRITES_IDX_MAP for channel, _ in writes):
            # Special channels (errors, interrupts) are upserted under fixed indexes, which may
            # repeat within one call: LangGraph's row-by-row statements keep their semantics.
            await super().aput_writes(config, writes, task_id, task_path)
            return
        configurable = config["configurable"]
        rows = self._dump_writes(
            configurable["thread_id"],
            configurable["checkpoint_ns"],
            configurable["checkpoint_id"],
            task_id,
            task_path,
            writes,
        )
        async with self._cursor(pipeline=True) as cur:
            await _insert(
                cur,
                "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
                "task_path, idx, channel, type, blob) VALUES {rows} ON CONFLICT (thread_id, "
                "checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING",
                rows,
            )


async def _insert(cur: AsyncCursor[DictRow], query: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`query` (with a `{rows}` slot) as multi-row INSERTs of `rows`."""
    for start in range(0, len(rows), _ROWS):
        chunk = rows[start : start + _ROWS]
        row = "(" + ", ".join(["%s"] * len(chunk[0])) + ")"
        params = [value for r in chunk for value in r]
        await cur.execute(query.format(rows=", ".join([row] * len(chunk))), params)
