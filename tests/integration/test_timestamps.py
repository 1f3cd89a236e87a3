"""Every time the /v1 API returns is ISO 8601 with a UTC offset (runs, threads, checkpoints)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx


def assert_recent_iso(value: object) -> None:
    assert isinstance(value, str), value
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0), value
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=10), value


def test_runs_threads_and_history_use_iso_8601(start_server, postgres_url: str, data_dir: Path):
    server = start_server(KEEL_DATABASE_URL=postgres_url, KEEL_DATA_DIR=str(data_dir))
    with httpx.Client(base_url=server.url, timeout=60) as client:
        tid = client.post("/v1/threads").json()["thread_id"]
        run = client.post(f"/v1/threads/{tid}/runs", json={"message": "How large are chunks?"})
        assert run.status_code in (200, 201, 202), run.text
        run_id = run.json()["run_id"]
        assert client.get(f"/v1/threads/{tid}/runs/{run_id}/wait").status_code == 200
        runs = client.get(f"/v1/threads/{tid}/runs").json()
        one = client.get(f"/v1/threads/{tid}/runs/{run_id}").json()
        thread = client.get(f"/v1/threads/{tid}").json()
        listed = client.get("/v1/threads").json()["threads"]
        history = client.get(f"/v1/threads/{tid}/history").json()
    for record in [run.json(), one, *runs]:
        assert_recent_iso(record["created_at"])
        assert_recent_iso(record["updated_at"])
    assert datetime.fromisoformat(one["updated_at"]) >= datetime.fromisoformat(one["created_at"])
    for record in [thread, *(t for t in listed if t["thread_id"] == tid)]:
        assert_recent_iso(record["created_at"])
        assert_recent_iso(record["updated_at"])
    assert history and all(assert_recent_iso(c["created_at"]) is None for c in history)
