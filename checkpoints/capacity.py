"""The startup check that every replica's pools fit under Postgres's connection limit."""

from typing import Any

from graph.errors import ConfigError

# Connections left for superusers, migrations and operators' psql sessions.
HEADROOM = 10


async def max_connections(pool: Any) -> int:
    """Postgres's `max_connections`, read through one of the pool's connections."""
    async with pool.connection() as conn:
        row = await (await conn.execute("SHOW max_connections")).fetchone()
    value = row["max_connections"] if isinstance(row, dict) else row[0]
    return int(value)


def check_connection_budget(pool_max: int, workers: int, replicas: int, limit: int) -> None:
    """Refuses a configuration whose pools could exhaust Postgres (`limit` is max_connections)."""
    needed = pool_max * workers * replicas
    if needed > limit - HEADROOM:
        raise ConfigError(
            f"KEEL_POOL_MAX x KEEL_WORKERS x KEEL_REPLICAS = {pool_max} x {workers} x {replicas}"
            f" = {needed} connections exceeds Postgres max_connections ({limit}) - {HEADROOM}"
        )
