"""Assistants: configured variants of a graph (name, description, config, context, metadata),
versioned and per tenant, in the checkpoint database beside the runs (Postgres, or SQLite).

Every create or patch writes a version row; the assistant row holds the version in use, which
`set_latest` can point back at an older one. Ids are per tenant: another tenant's assistant is
simply not found."""

import json
import time
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, cast

from checkpoints.containment import contains
from checkpoints.runs import RunStore
from graph.errors import AssistantExists, NotFound

# The columns a version fixes; `config`, `context` and `metadata` are JSON text.
FIELDS = ("graph_id", "name", "description", "config", "context", "metadata")
_JSON = ("config", "context", "metadata")
_NAMES, _MARKS = ", ".join(FIELDS), ", ".join(["%s"] * len(FIELDS))
_COLUMNS = """graph_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        config TEXT NOT NULL,
        context TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL"""
_SCHEMA = [
    f"""CREATE TABLE IF NOT EXISTS keel_assistants (
        tenant TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        {_COLUMNS},
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (tenant, assistant_id))""",
    f"""CREATE TABLE IF NOT EXISTS keel_assistant_versions (
        tenant TEXT NOT NULL,
        assistant_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        {_COLUMNS},
        PRIMARY KEY (tenant, assistant_id, version))""",
]


class AssistantFields(TypedDict):
    """What one version of an assistant sets."""

    graph_id: str
    name: str
    description: str | None
    config: dict[str, Any]
    context: dict[str, Any]
    metadata: dict[str, Any]


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def _record(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the Agent Server shapes an assistant (or one of its versions)."""
    record = {k: json.loads(row[k]) if k in _JSON else row[k] for k in FIELDS}
    record |= {
        "assistant_id": row["assistant_id"],
        "version": int(row["version"]),
        "created_at": _iso(float(row["created_at"])),
    }
    if "updated_at" in row:
        record["updated_at"] = _iso(float(row["updated_at"]))
    return record


def _values(fields: AssistantFields) -> tuple[Any, ...]:
    """The column values of `fields`, in the order of `FIELDS`."""
    given = cast(dict[str, Any], fields)
    return tuple(json.dumps(given[k]) if k in _JSON else given[k] for k in FIELDS)


def _fields(record: dict[str, Any]) -> AssistantFields:
    return cast(AssistantFields, {k: record[k] for k in FIELDS})


class AssistantStore:
    """Assistant rows and their versions, through the run store's transactions."""

    def __init__(self, db: RunStore):
        self.db = db

    async def setup(self) -> None:
        """Creates the tables (idempotent)."""
        async with self.db.transaction(lock_key="schema") as tx:
            for statement in _SCHEMA:
                await self.db.execute(tx, statement)

    async def _row(self, tx: Any, tenant: str, assistant_id: str) -> dict[str, Any] | None:
        rows = await self.db.fetch(
            tx,
            "SELECT * FROM keel_assistants WHERE tenant = %s AND assistant_id = %s",
            (tenant, assistant_id),
        )
        return rows[0] if rows else None

    async def _current(self, tx: Any, tenant: str, assistant_id: str) -> dict[str, Any]:
        row = await self._row(tx, tenant, assistant_id)
        if row is None:
            raise NotFound(f"assistant {assistant_id} not found")
        return _record(row)

    async def _add_version(
        self, tx: Any, tenant: str, assistant_id: str, version: int, fields: AssistantFields
    ) -> None:
        await self.db.execute(
            tx,
            f"INSERT INTO keel_assistant_versions (tenant, assistant_id, version, {_NAMES}, "
            f"created_at) VALUES (%s, %s, %s, {_MARKS}, %s)",
            (tenant, assistant_id, version, *_values(fields), time.time()),
        )

    async def _point(
        self, tx: Any, tenant: str, assistant_id: str, version: int, fields: AssistantFields
    ) -> dict[str, Any]:
        """Makes `version` (with `fields`) the assistant's current one and returns it."""
        assigned = ", ".join(f"{k} = %s" for k in FIELDS)
        await self.db.execute(
            tx,
            f"UPDATE keel_assistants SET version = %s, {assigned}, updated_at = %s "
            "WHERE tenant = %s AND assistant_id = %s",
            (version, *_values(fields), time.time(), tenant, assistant_id),
        )
        return await self._current(tx, tenant, assistant_id)

    async def create(
        self,
        tenant: str,
        assistant_id: str,
        fields: AssistantFields,
        if_exists: Literal["raise", "do_nothing"] = "raise",
    ) -> dict[str, Any]:
        """Creates the assistant at version 1; an id the tenant already uses raises
        `AssistantExists`, or returns that assistant with `if_exists="do_nothing"`."""
        async with self.db.transaction(lock_key=f"assistant:{tenant}:{assistant_id}") as tx:
            existing = await self._row(tx, tenant, assistant_id)
            if existing is not None:
                if if_exists == "do_nothing":
                    return _record(existing)
                raise AssistantExists(f"assistant {assistant_id} already exists")
            now = time.time()
            await self.db.execute(
                tx,
                f"INSERT INTO keel_assistants (tenant, assistant_id, version, {_NAMES}, "
                f"created_at, updated_at) VALUES (%s, %s, 1, {_MARKS}, %s, %s)",
                (tenant, assistant_id, *_values(fields), now, now),
            )
            await self._add_version(tx, tenant, assistant_id, 1, fields)
            return await self._current(tx, tenant, assistant_id)

    async def get(self, tenant: str, assistant_id: str) -> dict[str, Any]:
        """The tenant's assistant at its current version; `NotFound` otherwise."""
        async with self.db.transaction() as tx:
            return await self._current(tx, tenant, assistant_id)

    async def patch(
        self, tenant: str, assistant_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """A new version from the current one: `changes` replace its fields, except `metadata`,
        which is merged into the current metadata. Returns the assistant at that version."""
        async with self.db.transaction(lock_key=f"assistant:{tenant}:{assistant_id}") as tx:
            current = await self._current(tx, tenant, assistant_id)
            merged = {**current, **changes}
            merged["metadata"] = {**current["metadata"], **changes.get("metadata", {})}
            rows = await self.db.fetch(
                tx,
                "SELECT MAX(version) AS version FROM keel_assistant_versions "
                "WHERE tenant = %s AND assistant_id = %s",
                (tenant, assistant_id),
            )
            version = int(rows[0]["version"]) + 1
            await self._add_version(tx, tenant, assistant_id, version, _fields(merged))
            return await self._point(tx, tenant, assistant_id, version, _fields(merged))

    async def set_latest(self, tenant: str, assistant_id: str, version: int) -> dict[str, Any]:
        """Makes one of the assistant's versions its current one; `NotFound` for either."""
        async with self.db.transaction(lock_key=f"assistant:{tenant}:{assistant_id}") as tx:
            await self._current(tx, tenant, assistant_id)
            rows = await self.db.fetch(
                tx,
                "SELECT * FROM keel_assistant_versions "
                "WHERE tenant = %s AND assistant_id = %s AND version = %s",
                (tenant, assistant_id, version),
            )
            if not rows:
                raise NotFound(f"assistant {assistant_id} has no version {version}")
            return await self._point(tx, tenant, assistant_id, version, _fields(_record(rows[0])))

    async def versions(
        self, tenant: str, assistant_id: str, metadata: dict[str, Any], limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """The assistant's versions whose metadata contains `metadata`, newest first."""
        async with self.db.transaction() as tx:
            await self._current(tx, tenant, assistant_id)
            rows = await self.db.fetch(
                tx,
                "SELECT * FROM keel_assistant_versions WHERE tenant = %s AND assistant_id = %s "
                "ORDER BY version DESC",
                (tenant, assistant_id),
            )
        found = [r for r in map(_record, rows) if contains(r["metadata"], metadata)]
        return found[offset : offset + limit]

    async def delete(self, tenant: str, assistant_id: str) -> None:
        """Removes the assistant and its versions; `NotFound` when the tenant has no such one."""
        async with self.db.transaction(lock_key=f"assistant:{tenant}:{assistant_id}") as tx:
            removed = await self.db.execute(
                tx,
                "DELETE FROM keel_assistants WHERE tenant = %s AND assistant_id = %s",
                (tenant, assistant_id),
            )
            if not removed:
                raise NotFound(f"assistant {assistant_id} not found")
            await self.db.execute(
                tx,
                "DELETE FROM keel_assistant_versions WHERE tenant = %s AND assistant_id = %s",
                (tenant, assistant_id),
            )

    async def search(
        self, tenant: str, graph_id: str | None, name: str | None, metadata: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The tenant's assistants of `graph_id` whose name contains `name` (ignoring case) and
        whose metadata contains `metadata`, in no particular order. A tenant keeps a handful of
        assistants: they are filtered here, not by an index."""
        async with self.db.transaction() as tx:
            rows = await self.db.fetch(
                tx,
                "SELECT * FROM keel_assistants WHERE tenant = %s "
                "AND (CAST(%s AS TEXT) IS NULL OR graph_id = %s)",
                (tenant, graph_id, graph_id),
            )
        return [
            r
            for r in map(_record, rows)
            if (name is None or name.lower() in r["name"].lower())
            and contains(r["metadata"], metadata)
        ]
