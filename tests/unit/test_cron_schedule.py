"""Cron schedules: the next firing time, in the cron's timezone, and what is refused."""

from datetime import UTC, datetime

import pytest

from checkpoints.crons import next_fire
from graph.errors import InvalidInput


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


@pytest.mark.parametrize(
    ("schedule", "timezone", "after", "expected"),
    [
        ("*/15 * * * *", None, "2026-03-01T10:07:30+00:00", "2026-03-01T10:15:00+00:00"),
        ("0 9 * * 1-5", None, "2026-02-27T09:00:00+00:00", "2026-03-02T09:00:00+00:00"),
        ("0,30 8-9 1 * *", None, "2026-03-01T09:30:00+00:00", "2026-04-01T08:00:00+00:00"),
        ("@daily", None, "2026-03-01T09:30:00+00:00", "2026-03-02T00:00:00+00:00"),
        # 9:30 in Paris: UTC+1 in winter, UTC+2 after the change to summer time
        ("30 9 * * *", "Europe/Paris", "2026-03-28T12:00:00+00:00", "2026-03-29T07:30:00+00:00"),
        ("30 9 * * *", "Europe/Paris", "2026-03-27T12:00:00+00:00", "2026-03-28T08:30:00+00:00"),
    ],
)
def test_next_fire(schedule: str, timezone: str | None, after: str, expected: str) -> None:
    assert _utc(next_fire(schedule, timezone, _at(after))) == expected


@pytest.mark.parametrize(
    ("schedule", "timezone"),
    [
        ("every minute", None),
        ("61 * * * *", None),
        ("* * *", None),
        ("* * * * * *", None),  # seconds: not a five-field schedule
        ("0 0 30 2 *", None),  # valid fields, no such date
        ("* * * * *", "Mars/Base"),
        ("* * * * *", "../../etc/passwd"),
    ],
)
def test_bad_schedules_and_timezones_are_refused(schedule: str, timezone: str | None) -> None:
    with pytest.raises(InvalidInput):
        next_fire(schedule, timezone, 0)
