"""Crons: runs on a schedule, per tenant, in the checkpoint database beside the runs.

A cron row holds its schedule (cron fields, parsed by `croniter`), the run it submits (its
payload: the redacted message, knobs, stream modes, metadata) and `next_run_at`. Replicas claim due rows in
one transaction that also moves `next_run_at` on (`FOR UPDATE SKIP LOCKED` on Postgres), so each
firing is claimed by exactly one replica; a replica that dies between that commit and submitting
the run skips that one firing (at most once, never twice)."""

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from checkpoints.containment import contains
from checkpoints.runs import RunStore
from graph.errors import InvalidInput, NotFound

SortBy = Literal[
    "cron_id", "assistant_id", "thread_id", "created_at", "updated_at", "next_run_date", "end_time"
]
# The API's sort fields as columns (`next_run_date` is `next_run_at` here).
_SORT_COLUMNS = {"next_run_date": "next_run_at"}
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS keel_crons (
        cron_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        thread_id TEXT,
        schedule TEXT NOT NULL,
        timezone TEXT,
        end_time DOUBLE PRECISION,
        enabled BOOLEAN NOT NULL,
        on_run_completed TEXT,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        next_run_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS keel_crons_due ON keel_crons (next_run_at)",
    "CREATE INDEX IF NOT EXISTS keel_crons_tenant ON keel_crons (tenant, created_at)",
]


def next_fire(schedule: str, timezone: str | None, after: float) -> float:
    """The first time (epoch seconds) after `after` that `schedule` names, read in `timezone`
    (UTC when None); `InvalidInput` for a schedule or timezone that names nothing."""
    fields = len(schedule.split())
    if not (fields == 5 or schedule.startswith("@")) or not croniter.is_valid(schedule):
        raise InvalidInput(
            f"invalid cron schedule {schedule!r}: use five fields "
            "(minute hour day-of-month month day-of-week), e.g. '*/5 * * * *'"
        )
    try:
        zone = ZoneInfo(timezone) if timezone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown timezone {timezone!r}: use an IANA name") from None
    start = datetime.fromtimestamp(after, zone)
    try:
        return float(croniter(schedule, start).get_next(datetime).timestamp())
    except CroniterError:  # valid fields that name no date (`0 0 30 2 *`)
        raise InvalidInput(f"cron schedule {schedule!r} names no date") from None


def _first_due(spec: "CronSpec", now: float) -> float | None:
    """When a new (or changed) cron is first due: None when that is past its end time."""
    due = next_fire(spec.schedule, spec.timezone, now)
    return None if spec.end_time is not None and due > spec.end_time else due


def _iso(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).isoformat()


@dataclass
class Cron:
    """A cron row; its `payload` is the run each firing submits."""

    cron_id: str
    tenant: str
    assistant_id: str
    thread_id: str | None
    schedule: str
    timezone: str | None
    end_time: float | None
    enabled: bool
    on_run_completed: str | None
    payload: dict[str, Any]
    metadata: dict[str, Any]
    next_run_at: float | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Cron":
        return cls(
            **{k: row[k] for k in ("cron_id", "tenant", "assistant_id", "thread_id")},
            schedule=row["schedule"],
            timezone=row["timezone"],
            end_time=row["end_time"],
            enabled=bool(row["enabled"]),
            on_run_completed=row["on_run_completed"],
            payload=json.loads(row["payload"]),
            metadata=json.loads(row["metadata"]),
            next_run_at=row["next_run_at"],
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
        )

    def body(self) -> dict[str, Any]:
        """The cron in the Agent Server's shape."""
        return {
            "cron_id": self.cron_id,
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "on_run_completed": self.on_run_completed,
            "end_time": _iso(self.end_time),
            "schedule": self.schedule,
            "timezone": self.timezone,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "payload": self.payload,
            "user_id": None,
            "next_run_date": _iso(self.next_run_at),
            "metadata": self.metadata,
            "enabled": self.enabled,
        }


@dataclass(frozen=True)
class CronSpec:
    """What a new cron sets."""

    assistant_id: str
    thread_id: str | None
    schedule: str
    timezone: str | None
    end_time: float | None
    enabled: bool
    on_run_completed: str | None
    payload: dict[str, Any]
    metadata: dict[str, Any]


class CronStore:
    """Cron rows, through the run store's transactions; `postgres` claims with SKIP LOCKED
    (SQLite's `BEGIN IMMEDIATE` already serialises its one process)."""

    def __init__(self, db: RunStore, postgres: bool):
        self.db = db
        self._skip_locked = " FOR UPDATE SKIP LOCKED" if postgres else ""

    async def setup(self) -> None:
        """Creates the table (idempotent)."""
        async with self.db.transaction(lock_key="schema") as tx:
            for statement in _SCHEMA:
                await self.db.execute(tx, statement)

    async def create(self, tenant: str, spec: CronSpec) -> Cron:
        """Stores a new cron, first due at its schedule's next time after now."""
        now = time.time()
        due = _first_due(spec, now)
        async with self.db.transaction() as tx:
            rows = await self.db.fetch(
                tx,
                "INSERT INTO keel_crons (cron_id, tenant, assistant_id, thread_id, schedule, "
                "timezone, end_time, enabled, on_run_completed, payload, metadata, next_run_at, "
                "created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (
                    str(uuid.uuid4()),
                    tenant,
                    spec.assistant_id,
                    spec.thread_id,
                    spec.schedule,
                    spec.timezone,
                    spec.end_time,
                    spec.enabled,
                    spec.on_run_completed,
                    json.dumps(spec.payload),
                    json.dumps(spec.metadata),
                    due,
                    now,
                    now,
                ),
            )
        return Cron.from_row(rows[0])

    async def update(self, tenant: str, cron_id: str, spec: CronSpec) -> Cron:
        """Replaces the tenant's cron with `spec` (next due at its schedule's next time after
        now); `NotFound` when the tenant has no such cron."""
        now = time.time()
        async with self.db.transaction() as tx:
            rows = await self.db.fetch(
                tx,
                "UPDATE keel_crons SET schedule = %s, timezone = %s, end_time = %s, enabled = %s, "
                "payload = %s, metadata = %s, next_run_at = %s, updated_at = %s "
                "WHERE tenant = %s AND cron_id = %s RETURNING *",
                (
                    spec.schedule,
                    spec.timezone,
                    spec.end_time,
                    spec.enabled,
                    json.dumps(spec.payload),
                    json.dumps(spec.metadata),
                    _first_due(spec, now),
                    now,
                    tenant,
                    cron_id,
                ),
            )
        if not rows:
            raise NotFound(f"cron {cron_id} not found")
        return Cron.from_row(rows[0])

    async def get(self, tenant: str, cron_id: str) -> Cron:
        """The tenant's cron; `NotFound` for any other."""
        async with self.db.single() as tx:
            rows = await self.db.fetch(
                tx,
                "SELECT * FROM keel_crons WHERE tenant = %s AND cron_id = %s",
                (tenant, cron_id),
            )
        if not rows:
            raise NotFound(f"cron {cron_id} not found")
        return Cron.from_row(rows[0])

    async def delete(self, tenant: str, cron_id: str) -> None:
        """Removes the tenant's cron (runs it already submitted stay); `NotFound` otherwise."""
        async with self.db.transaction() as tx:
            removed = await self.db.execute(
                tx, "DELETE FROM keel_crons WHERE tenant = %s AND cron_id = %s", (tenant, cron_id)
            )
        if not removed:
            raise NotFound(f"cron {cron_id} not found")

    async def delete_for_thread(self, thread_id: str) -> None:
        """Removes the crons of a deleted thread."""
        async with self.db.transaction() as tx:
            await self.db.execute(tx, "DELETE FROM keel_crons WHERE thread_id = %s", (thread_id,))

    async def search(
        self,
        tenant: str,
        assistant_id: str | None = None,
        thread_id: str | None = None,
        enabled: bool | None = None,
        metadata: dict[str, Any] | None = None,
        sort_by: SortBy = "created_at",
        descending: bool = True,
    ) -> list[Cron]:
        """The tenant's crons matching every given field (metadata by containment), sorted.
        A tenant keeps a handful of crons: metadata is matched here, not by an index."""
        column = _SORT_COLUMNS.get(sort_by, sort_by)
        order = "DESC" if descending else "ASC"
        async with self.db.single() as tx:
            rows = await self.db.fetch(
                tx,
                "SELECT * FROM keel_crons WHERE tenant = %s "
                "AND (CAST(%s AS TEXT) IS NULL OR assistant_id = %s) "
                "AND (CAST(%s AS TEXT) IS NULL OR thread_id = %s) "
                "AND (CAST(%s AS BOOLEAN) IS NULL OR enabled = %s) "
                f"ORDER BY {column} {order}, cron_id {order}",
                (tenant, assistant_id, assistant_id, thread_id, thread_id, enabled, enabled),
            )
        found = [Cron.from_row(r) for r in rows]
        return [c for c in found if contains(c.metadata, metadata or {})]

    async def claim_due(self, now: float, limit: int = 20) -> list[Cron]:
        """Enabled crons due at `now`, each moved on to its next time (none past its end time)
        in the same transaction: another replica's claim skips them."""
        due_rows = "FROM keel_crons WHERE next_run_at <= %s AND enabled = %s"
        async with self.db.single() as tx:  # most ticks find nothing: no transaction for that
            if not await self.db.fetch(tx, f"SELECT cron_id {due_rows} LIMIT 1", (now, True)):
                return []
        claimed = []
        async with self.db.transaction() as tx:
            rows = await self.db.fetch(
                tx,
                f"SELECT * {due_rows} ORDER BY next_run_at LIMIT %s{self._skip_locked}",
                (now, True, limit),
            )
            for cron in map(Cron.from_row, rows):
                due: float | None = next_fire(cron.schedule, cron.timezone, now)
                if cron.end_time is not None and due is not None and due > cron.end_time:
                    due = None  # its last firing: nothing is due after it
                await self.db.execute(
                    tx,
                    "UPDATE keel_crons SET next_run_at = %s WHERE cron_id = %s",
                    (due, cron.cron_id),
                )
                claimed.append(cron)
        return claimed
