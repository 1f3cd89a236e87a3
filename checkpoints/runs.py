"""Runs and their event logs, in the checkpoint database (Postgres, or SQLite embedded).

A run row is the unit of work a replica claims under a lease; its events are appended to
`keel_run_events` as they happen, so any replica can replay them (Last-Event-ID) and follow the live
rest. Multitask rules are enforced under a per-thread lock in the database (a transaction-scoped
advisory lock on Postgres, `BEGIN IMMEDIATE` on SQLite), never in a process's memory.
"""

import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from graph.errors import Conflict, NotFound

Status = Literal["pending", "running", "succeeded", "failed", "cancelled", "interrupted"]
Strategy = Literal["reject", "enqueue", "interrupt", "rollback"]
ACTIVE = ("pending", "running")
TERMINAL_EVENTS = ("run.finished", "run.error")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS keel_runs (
        run_id TEXT PRIMARY KEY,
        thread_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        status TEXT NOT NULL,
        strategy TEXT NOT NULL,
        request TEXT NOT NULL,
        result TEXT,
        error TEXT,
        cancel TEXT,
        start_checkpoint_id TEXT,
        lease_owner TEXT,
        lease_expires_at DOUBLE PRECISION,
        attempts INTEGER NOT NULL DEFAULT 0,
        events_pruned INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS keel_runs_thread ON keel_runs (thread_id, created_at)",
    "CREATE INDEX IF NOT EXISTS keel_runs_status ON keel_runs (status, lease_expires_at)",
    """CREATE TABLE IF NOT EXISTS keel_run_events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (run_id, seq))""",
]


@dataclass
class Run:
    """A run row."""

    run_id: str
    thread_id: str
    tenant: str
    status: Status
    strategy: Strategy
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    cancel: str | None
    start_checkpoint_id: str | None
    lease_owner: str | None
    attempts: int
    events_pruned: bool
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Run":
        return cls(
            run_id=row["run_id"],
            thread_id=row["thread_id"],
            tenant=row["tenant"],
            status=row["status"],
            strategy=row["strategy"],
            request=json.loads(row["request"]),
            result=json.loads(row["result"]) if row["result"] else None,
            error=row["error"],
            cancel=row["cancel"],
            start_checkpoint_id=row["start_checkpoint_id"],
            lease_owner=row["lease_owner"],
            attempts=int(row["attempts"]),
            events_pruned=bool(row["events_pruned"]),
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
        )


class RunStore:
    """SQL over one connection owner; subclasses supply the transaction and placeholder style."""

    placeholder = "%s"

    def _q(self, query: str) -> str:
        return query if self.placeholder == "%s" else query.replace("%s", self.placeholder)

    @asynccontextmanager
    async def transaction(self, lock_key: str | None = None) -> AsyncIterator[Any]:
        """A transaction; with `lock_key`, serialised with every other holder of that key."""
        raise NotImplementedError
        yield  # pragma: no cover

    @asynccontextmanager
    async def single(self) -> AsyncIterator[Any]:
        """A connection for one statement, atomic on its own: no BEGIN/COMMIT round trips."""
        raise NotImplementedError
        yield  # pragma: no cover

    async def fetch(
        self, tx: Any, query: str, params: tuple[Any, ...] = ()
    ) -> list[dict[str, Any]]:
        """The rows of `query` (`%s` placeholders) in transaction `tx`, as dicts; the other
        stores on this database (`checkpoints.assistants`) run their SQL through it too."""
        raise NotImplementedError

    async def execute(self, tx: Any, query: str, params: tuple[Any, ...] = ()) -> int:
        """Runs `query` in transaction `tx`; returns the number of rows it changed."""
        raise NotImplementedError

    async def setup(self) -> None:
        """Creates the tables (idempotent)."""
        async with self.transaction(lock_key="schema") as tx:  # replicas may start together
            for statement in _SCHEMA:
                await self.execute(tx, statement)

    # -- runs -----------------------------------------------------------------------------
    async def create(
        self,
        tenant: str,
        thread_id: str,
        strategy: Strategy,
        request: dict[str, Any],
        start_checkpoint_id: str | None,
    ) -> tuple[Run, list[str]]:
        """Inserts a pending run under the thread lock, applying the multitask strategy.
        Returns the run and the ids of runs asked to stop (interrupt/rollback)."""
        now = time.time()
        run_id = uuid.uuid4().hex
        async with self.transaction(lock_key=thread_id) as tx:
            active = await self.fetch(
                tx,
                "SELECT run_id FROM keel_runs WHERE thread_id = %s AND status IN ('pending', 'running')",
                (thread_id,),
            )
            stopped = [r["run_id"] for r in active]
            if stopped and strategy == "reject":
                raise Conflict(f"thread {thread_id} has a run in progress ({stopped[0]})")
            if stopped and strategy in ("interrupt", "rollback"):
                cancel = "rollback" if strategy == "rollback" else "cancel"
                await self.execute(
                    tx,
                    "UPDATE keel_runs SET cancel = %s, updated_at = %s "
                    "WHERE thread_id = %s AND status IN ('pending', 'running')",
                    (cancel, now, thread_id),
                )
            else:
                stopped = []
            rows = await self.fetch(
                tx,
                "INSERT INTO keel_runs (run_id, thread_id, tenant, status, strategy, request, "
                "start_checkpoint_id, created_at, updated_at) VALUES (%s, %s, %s, 'pending', %s, %s, %s, %s, %s) "
                "RETURNING *",
                (
                    run_id,
                    thread_id,
                    tenant,
                    strategy,
                    json.dumps(request),
                    start_checkpoint_id,
                    now,
                    now,
                ),
            )
        return Run.from_row(rows[0]), stopped

    async def get(
        self, run_id: str, tenant: str | None = None, thread_id: str | None = None
    ) -> Run:
        """A run; `NotFound` unless it exists for this tenant and thread (when given)."""
        async with self.single() as tx:
            rows = await self.fetch(tx, "SELECT * FROM keel_runs WHERE run_id = %s", (run_id,))
        if not rows:
            raise NotFound(f"run {run_id} not found")
        run = Run.from_row(rows[0])
        if (tenant is not None and run.tenant != tenant) or (
            thread_id is not None and run.thread_id != thread_id
        ):
            raise NotFound(f"run {run_id} not found")
        return run

    async def list_for_thread(self, thread_id: str, limit: int = 100) -> list[Run]:
        """The thread's runs, newest first."""
        async with self.single() as tx:
            rows = await self.fetch(
                tx,
                "SELECT * FROM keel_runs WHERE thread_id = %s ORDER BY created_at DESC LIMIT %s",
                (thread_id, limit),
            )
        return [Run.from_row(r) for r in rows]

    async def claim_next(self, thread_id: str, owner: str, lease_s: float) -> Run | None:
        """Takes the thread's oldest pending run when none is running, under the thread lock."""
        now = time.time()
        async with self.transaction(lock_key=thread_id) as tx:
            rows = await self.fetch(  # one statement: a claim is one round trip under the lock
                tx,
                "UPDATE keel_runs SET status = 'running', lease_owner = %s, lease_expires_at = %s, "
                "attempts = attempts + 1, updated_at = %s WHERE run_id = ("
                "SELECT run_id FROM keel_runs WHERE thread_id = %s AND status = 'pending' "
                "AND NOT EXISTS (SELECT 1 FROM keel_runs WHERE thread_id = %s AND status = 'running') "
                "ORDER BY created_at LIMIT 1) RETURNING *",
                (owner, now + lease_s, now, thread_id, thread_id),
            )
        return Run.from_row(rows[0]) if rows else None

    async def claimable_threads(self, waited_s: float, limit: int = 50) -> list[str]:
        """Threads with a run pending for at least `waited_s` (since it was submitted or handed
        back) and none running: work any replica may pick up."""
        async with self.single() as tx:
            rows = await self.fetch(
                tx,
                "SELECT DISTINCT thread_id FROM keel_runs p WHERE status = 'pending' "
                "AND updated_at <= %s AND NOT EXISTS "
                "(SELECT 1 FROM keel_runs r WHERE r.thread_id = p.thread_id AND r.status = 'running') LIMIT %s",
                (time.time() - waited_s, limit),
            )
        return [r["thread_id"] for r in rows]

    async def count_pending(self) -> int:
        """Runs waiting for a replica, across all replicas."""
        async with self.single() as tx:
            rows = await self.fetch(
                tx, "SELECT count(*) AS n FROM keel_runs WHERE status = 'pending'", ()
            )
        return int(rows[0]["n"])

    async def release_expired(self, max_attempts: int) -> list[tuple[str, str]]:
        """Runs whose replica stopped heart-beating: back to pending to resume, or `interrupted`
        after `max_attempts`. Returns (run_id, new status) pairs."""
        now = time.time()
        async with self.transaction() as tx:
            rows = await self.fetch(
                tx,
                "SELECT run_id, attempts FROM keel_runs WHERE status = 'running' AND lease_expires_at < %s",
                (now,),
            )
            out = []
            for row in rows:
                status = "pending" if int(row["attempts"]) < max_attempts else "interrupted"
                changed = await self.execute(
                    tx,
                    "UPDATE keel_runs SET status = %s, lease_owner = NULL, error = %s, updated_at = %s "
                    "WHERE run_id = %s AND status = 'running' AND lease_expires_at < %s",
                    (
                        status,
                        "the replica running it stopped (lease expired)",
                        now,
                        row["run_id"],
                        now,
                    ),
                )
                if changed:
                    out.append((row["run_id"], status))
        return out

    async def heartbeat(self, owner: str, run_ids: list[str], lease_s: float) -> dict[str, str]:
        """Extends the leases of this replica's runs; returns those asked to stop (id -> kind)."""
        if not run_ids:
            return {}
        now = time.time()
        marks = ", ".join(["%s"] * len(run_ids))
        async with self.transaction() as tx:
            await self.execute(
                tx,
                f"UPDATE keel_runs SET lease_expires_at = %s WHERE lease_owner = %s AND run_id IN ({marks})",
                (now + lease_s, owner, *run_ids),
            )
            rows = await self.fetch(
                tx,
                f"SELECT run_id, cancel FROM keel_runs WHERE cancel IS NOT NULL AND run_id IN ({marks})",
                tuple(run_ids),
            )
        return {r["run_id"]: r["cancel"] for r in rows}

    async def request_cancel(self, run: Run, kind: str = "cancel") -> Run:
        """Asks a run to stop; a pending run is cancelled at once."""
        now = time.time()
        async with self.transaction(lock_key=run.thread_id) as tx:
            await self.execute(
                tx,
                "UPDATE keel_runs SET cancel = %s, updated_at = %s WHERE run_id = %s AND status = 'running'",
                (kind, now, run.run_id),
            )
            await self.execute(
                tx,
                "UPDATE keel_runs SET status = 'cancelled', cancel = %s, updated_at = %s "
                "WHERE run_id = %s AND status = 'pending'",
                (kind, now, run.run_id),
            )
        return await self.get(run.run_id)

    async def set_start_checkpoint(self, run_id: str, checkpoint_id: str | None) -> None:
        """Records the checkpoint a run started from (what `rollback` returns the thread to)."""
        async with self.single() as tx:
            await self.execute(
                tx,
                "UPDATE keel_runs SET start_checkpoint_id = %s WHERE run_id = %s",
                (checkpoint_id, run_id),
            )

    async def release(self, run_id: str) -> None:
        """Hands a running run back (graceful shutdown): pending, for any replica to resume."""
        async with self.transaction() as tx:
            await self.execute(
                tx,
                "UPDATE keel_runs SET status = 'pending', lease_owner = NULL, updated_at = %s "
                "WHERE run_id = %s AND status = 'running'",
                (time.time(), run_id),
            )

    async def requeue(self, run: Run) -> Run:
        """Makes an interrupted (or retryably failed) run pending again, for `resume`."""
        async with self.transaction(lock_key=run.thread_id) as tx:
            await self.execute(
                tx,
                "UPDATE keel_runs SET status = 'pending', attempts = 0, cancel = NULL, error = NULL, "
                "updated_at = %s WHERE run_id = %s AND status IN ('interrupted', 'failed')",
                (time.time(), run.run_id),
            )
        return await self.get(run.run_id)

    async def finish(
        self,
        run_id: str,
        status: Status,
        result: dict[str, Any] | None,
        error: str | None,
        event: tuple[int, str, dict[str, Any]] | None = None,
    ) -> None:
        """Records a run's outcome and drops its lease; with `event` (seq, name, data), logs the
        outcome event in the same transaction, so no one sees one without the other."""
        async with self.transaction() as tx:
            if event is not None:
                await self._insert_events(tx, run_id, [event])
            await self.execute(
                tx,
                "UPDATE keel_runs SET status = %s, result = %s, error = %s, lease_owner = NULL, "
                "lease_expires_at = NULL, updated_at = %s WHERE run_id = %s",
                (
                    status,
                    json.dumps(result) if result is not None else None,
                    error,
                    time.time(),
                    run_id,
                ),
            )

    # -- events ---------------------------------------------------------------------------
    async def append(self, run_id: str, seq: int, event: str, data: dict[str, Any]) -> None:
        """Appends one event; (run_id, seq) is unique, so a replayed write cannot duplicate."""
        await self.append_many(run_id, [(seq, event, data)])

    async def append_many(self, run_id: str, events: list[tuple[int, str, dict[str, Any]]]) -> None:
        """Appends (seq, event, data) rows in one transaction, one multi-row INSERT per 1,000."""
        async with self.single() if len(events) <= 1000 else self.transaction() as tx:
            await self._insert_events(tx, run_id, events)

    async def _insert_events(
        self, tx: Any, run_id: str, events: list[tuple[int, str, dict[str, Any]]]
    ) -> None:
        now = time.time()
        for start in range(0, len(events), 1000):  # under SQLite's bound-parameter limit
            chunk = events[start : start + 1000]
            params: list[Any] = []
            for seq, event, data in chunk:
                params += (run_id, seq, event, json.dumps(data), now)
            rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            await self.execute(
                tx,
                f"INSERT INTO keel_run_events (run_id, seq, event, data, created_at) VALUES {rows}",
                tuple(params),
            )

    async def last_seq(self, run_id: str) -> int:
        """The highest event sequence number of a run (0 when none)."""
        async with self.single() as tx:
            rows = await self.fetch(
                tx,
                "SELECT COALESCE(MAX(seq), 0) AS seq FROM keel_run_events WHERE run_id = %s",
                (run_id,),
            )
        return int(rows[0]["seq"])

    async def last_event(self, run_id: str) -> tuple[int, str] | None:
        """The sequence number and name of the run's latest logged event."""
        async with self.single() as tx:
            rows = await self.fetch(
                tx,
                "SELECT seq, event FROM keel_run_events WHERE run_id = %s ORDER BY seq DESC LIMIT 1",
                (run_id,),
            )
        return (int(rows[0]["seq"]), rows[0]["event"]) if rows else None

    async def events_after(
        self, run_id: str, seq: int, limit: int = 500
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """Events with a sequence number above `seq`, in order."""
        async with self.single() as tx:
            rows = await self.fetch(
                tx,
                "SELECT seq, event, data FROM keel_run_events WHERE run_id = %s AND seq > %s "
                "ORDER BY seq LIMIT %s",
                (run_id, seq, limit),
            )
        return [(int(r["seq"]), r["event"], json.loads(r["data"])) for r in rows]

    async def delete(self, run: Run) -> None:
        """Removes an ended run and its event log; `Conflict` while it is pending or running."""
        async with self.transaction(lock_key=run.thread_id) as tx:
            removed = await self.execute(
                tx,
                "DELETE FROM keel_runs WHERE run_id = %s AND status NOT IN ('pending', 'running')",
                (run.run_id,),
            )
            if not removed:
                raise Conflict(f"run {run.run_id} is still in progress: cancel it first")
            await self.execute(tx, "DELETE FROM keel_run_events WHERE run_id = %s", (run.run_id,))

    # -- retention ------------------------------------------------------------------------
    async def delete_thread(self, thread_id: str) -> None:
        """Removes a thread's runs and event logs."""
        async with self.transaction(lock_key=thread_id) as tx:
            await self.execute(
                tx,
                "DELETE FROM keel_run_events WHERE run_id IN (SELECT run_id FROM keel_runs WHERE thread_id = %s)",
                (thread_id,),
            )
            await self.execute(tx, "DELETE FROM keel_runs WHERE thread_id = %s", (thread_id,))

    async def prune_events(self, older_than_s: float) -> int:
        """Drops the event logs of runs that ended more than `older_than_s` ago."""
        cutoff = time.time() - older_than_s
        async with self.transaction() as tx:
            done = "status NOT IN ('pending', 'running') AND updated_at < %s AND events_pruned = 0"
            removed = await self.execute(
                tx,
                f"DELETE FROM keel_run_events WHERE run_id IN (SELECT run_id FROM keel_runs WHERE {done})",
                (cutoff,),
            )
            await self.execute(
                tx, f"UPDATE keel_runs SET events_pruned = 1 WHERE {done}", (cutoff,)
            )
        return removed


class PostgresRunStore(RunStore):
    """Runs on the shared `AsyncConnectionPool` (autocommit; explicit transactions here)."""

    def __init__(self, pool: Any):
        self._pool = pool

    @asynccontextmanager
    async def transaction(self, lock_key: str | None = None) -> AsyncIterator[Any]:
        async with self._pool.connection() as conn, conn.transaction():
            if lock_key is not None:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 42))", (f"keel:{lock_key}",)
                )
            yield conn

    @asynccontextmanager
    async def single(self) -> AsyncIterator[Any]:
        async with self._pool.connection() as conn:  # autocommit: the statement is its own tx
            yield conn

    async def fetch(
        self, tx: Any, query: str, params: tuple[Any, ...] = ()
    ) -> list[dict[str, Any]]:
        cursor = await tx.execute(query, params)
        return list(await cursor.fetchall())

    async def execute(self, tx: Any, query: str, params: tuple[Any, ...] = ()) -> int:
        cursor = await tx.execute(query, params)
        return int(cursor.rowcount or 0)


class SqliteRunStore(RunStore):
    """Runs on a `sqlite3` connection of their own, called inline (see `checkpoints.sqlite`):
    a transaction's statements never suspend, so `BEGIN IMMEDIATE` ... `COMMIT` is one step of
    the event loop and no other coroutine can interleave a statement on this connection."""

    placeholder = "?"

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    @asynccontextmanager
    async def transaction(self, lock_key: str | None = None) -> AsyncIterator[Any]:
        self._conn.execute("BEGIN IMMEDIATE")  # raises if a body ever suspended mid-transaction
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @asynccontextmanager
    async def single(self) -> AsyncIterator[Any]:
        yield self._conn  # a statement in autocommit mode is its own transaction

    async def fetch(
        self, tx: Any, query: str, params: tuple[Any, ...] = ()
    ) -> list[dict[str, Any]]:
        cursor = tx.execute(self._q(query), params)
        names = [c[0] for c in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    async def execute(self, tx: Any, query: str, params: tuple[Any, ...] = ()) -> int:
        return int(tx.execute(self._q(query), params).rowcount or 0)
