"""JSON containment for filters the embedded backends (and small tables) apply in Python."""

from typing import Any


def contains(value: Any, wanted: Any) -> bool:
    """Whether `value` contains `wanted`, as Postgres' jsonb `@>` defines it."""
    if isinstance(wanted, dict):
        return isinstance(value, dict) and all(
            k in value and contains(value[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return isinstance(value, list) and all(any(contains(x, w) for x in value) for w in wanted)
    return bool(value == wanted)
