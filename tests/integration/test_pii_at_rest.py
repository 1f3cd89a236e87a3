"""No raw PII at rest: PII-laden messages go through real runs on a real server (Postgres
checkpoints and run logs, Redis cache), then every place data could rest is scanned for the raw
values: every Postgres table, every Redis key and value, the Chroma files, the server's log.

Names and places are left out of the scan: they are redacted only with `KEEL_PII_NAMES=true`,
and the small spaCy model's recall on them is below 1 (see docs/security.md)."""

import uuid
from pathlib import Path

import httpx
import psycopg
import redis

from scripts.guard_bench import pii_messages

# Every planted kind at least 8 times (seed 11); spread over threads, since one long thread
# would test storage growth instead.
MESSAGES, THREADS = 120, 6
NAMES = {"PERSON", "LOCATION"}


def _as_text(value: object) -> str:
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _postgres_dump(url: str) -> str:
    parts = []
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                parts.append(" ".join(_as_text(v) for v in row))
    return "\n".join(parts)


def _redis_dump(url: str) -> str:
    client = redis.Redis.from_url(url)
    parts = []
    for key in client.scan_iter(count=1000):
        parts.append(_as_text(key))
        if client.type(key) == b"string":
            parts.append(_as_text(client.get(key)))
    return "\n".join(parts)


def _files_dump(root: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file()
    )


def test_no_raw_pii_anywhere_after_real_runs(
    start_server, postgres_url, redis_url, data_dir, tmp_path
):
    server = start_server(
        KEEL_DATABASE_URL=postgres_url, KEEL_REDIS_URL=redis_url, KEEL_DATA_DIR=str(data_dir)
    )
    planted: list[str] = []
    marker = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        threads = [client.post("/v1/threads").json()["thread_id"] for _ in range(THREADS)]
        for n, (text, spans) in enumerate(pii_messages(MESSAGES, seed=11)):
            planted += [s.value for s in spans if s.entity not in NAMES]
            body = {"message": f"{text} ({marker}-{n}) How are duplicate chunks avoided?"}
            response = client.post(f"/v1/threads/{threads[n % THREADS]}/runs/wait", json=body)
            assert response.status_code == 200, response.text
        for thread_id in threads:
            messages = client.get(f"/v1/threads/{thread_id}").json()["messages"]
            assert len(messages) == 2 * MESSAGES // THREADS and "<" in messages[0]["content"]
    assert len(planted) >= MESSAGES
    stores = {
        "postgres": _postgres_dump(postgres_url),
        "redis": _redis_dump(redis_url),
        "chroma and cache files": _files_dump(data_dir),
        "server log": _files_dump(tmp_path),
    }
    assert marker in stores["postgres"]  # the scan does see this test's rows
    for name, dump in stores.items():
        leaked = sorted({value for value in planted if value in dump})
        assert not leaked, f"raw PII in {name}: {leaked[:5]}"
