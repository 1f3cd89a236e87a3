"""The `keel` command line as a user runs it: a subprocess, driven through stdin, against a real
`keel serve` (or against nothing listening)."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cli.process import free_port
from tests.conftest import ROOT

QUESTION = "How often do idle connections receive a keep-alive comment?"


def keel(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """`keel <args>` in a clean environment (no developer KEEL_ settings), run to completion."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, **env},
        timeout=120,
    )


@pytest.fixture
def server(start_server, postgres_url: str, data_dir: Path):
    return start_server(KEEL_DATABASE_URL=postgres_url, KEEL_DATA_DIR=str(data_dir))


def test_help_lists_commands_without_log_noise():
    result = keel("--help")
    assert result.returncode == 0
    for command in ("serve", "ingest", "chat", "eval", "bench", "--verbose"):
        assert command in result.stdout
    assert result.stderr == ""
    chat = keel("chat", "--help")
    assert "--api-key" in chat.stdout and "KEEL_PORT" in chat.stdout and chat.stderr == ""


def test_chat_streams_then_prints_the_cached_answer(server):
    # Twice the same question: the second reply comes from the cache, with no token events.
    # `/quit` ends the session: the question after it is never asked.
    stdin = f"{QUESTION}\n{QUESTION}\n/quit\nWhat is a lighthouse?\n"
    result = keel("chat", "--url", server.url, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    replies = [line.rstrip() for line in result.stdout.splitlines() if line.startswith("keel> ")]
    assert len(replies) == 2
    assert "fifteen seconds" in replies[0] and replies[1] == replies[0]
    out = result.stdout
    assert out.count("[1] streaming.md") == 2 and out.count("(cached)") == 1
    assert "· guard " in out and "· retrieve " in out and " ms" in out
    assert out.startswith("new thread; /quit")
    # (input() echoes no newline from a pipe: each printed line follows a "you> " prompt)
    (thread_id,) = re.findall(r"^you> thread (\S+) \(resume with --thread \1\)$", out, re.M)
    # Timings come before the answer, the answering node's own time and marks right under it.
    before, answer, after = out.split("\n")[2:5]
    assert "· guard " in before and answer.startswith("keel> ") and "· generate " in after, out
    # Resuming the thread: the same id, found before the first prompt.
    resumed = keel("chat", "--thread", thread_id, KEEL_PORT=str(server.port))
    assert resumed.returncode == 0 and resumed.stdout.startswith(f"thread {thread_id} ")

    # Quitting at once (or at once reaching the end of input) leaves no empty thread behind.
    def threads() -> list[str]:  # the database is the session's: other tests' threads are there
        page = httpx.get(f"{server.url}/v1/threads", params={"limit": 100}).json()
        return [t["thread_id"] for t in page["threads"]]

    known = threads()
    for stdin in ("/quit\n", ""):
        result = keel("chat", "--url", server.url, stdin=stdin)
        assert result.returncode == 0 and result.stdout.startswith("new thread; "), result
    assert threads() == known


def test_unknown_thread_fails_before_the_prompt(server):
    result = keel("chat", "--thread", "no-such-thread", KEEL_URL=server.url, stdin=f"{QUESTION}\n")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == f"keel chat: thread no-such-thread not found on {server.url}"


def test_no_server_is_one_friendly_line():
    port = free_port()
    result = keel("chat", KEEL_PORT=str(port), stdin=f"{QUESTION}\n")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"keel chat: cannot reach a keel server at http://127.0.0.1:{port}")


def test_api_key_from_flag_or_environment(start_server, postgres_url: str, data_dir: Path):
    key = "cli-test-key"
    keys = json.dumps({hashlib.sha256(key.encode()).hexdigest(): "default"})
    server = start_server(
        KEEL_DATABASE_URL=postgres_url, KEEL_DATA_DIR=str(data_dir), KEEL_API_KEYS=keys
    )
    refused = keel("chat", "--url", server.url, stdin=f"{QUESTION}\n")
    assert refused.returncode == 1
    assert refused.stderr.startswith("keel chat: 401 unauthorized: ")
    assert len(refused.stderr.strip().splitlines()) == 1
    for args, env in ((["--api-key", key], {}), ([], {"KEEL_API_KEY": key})):
        result = keel("chat", "--url", server.url, *args, stdin=f"{QUESTION}\n", **env)
        assert result.returncode == 0, result.stderr
        assert "fifteen seconds" in result.stdout


def test_cache_bench_times_both_kinds_of_hit(tmp_path: Path, redis_url: str) -> None:
    """Smoke of `keel bench --cache` on the sample corpus: two questions, their repeats and
    paraphrases through a real server, and lookups at 500 cached questions in both stores."""
    paraphrases = {
        "How does keel stream tokens to the client?": "How are tokens streamed to the client by keel?",
        "Does ingestion bump the corpus version?": "Is the corpus version bumped by ingestion?",
    }
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"a": a, "b": b, "hit": True}) + "\n" for a, b in paraphrases.items())
    )
    result = keel(
        "bench",
        "--cache",
        "--corpus",
        str(ROOT / "samples" / "corpus"),
        "--data-dir",
        str(tmp_path / "data"),
        "--pairs",
        str(pairs),
        "--cache-questions",
        "500",
        "--redis-url",
        redis_url,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    turns = report["hit_turns"]
    assert turns["questions_answered_and_cached"] == "2/2"
    assert turns["exact_hit_turn_ms"]["n"] == 2
    assert turns["semantic_hit_turn_ms"]["n"] == 2
    for store in ("lookup_sqlite", "lookup_redis"):
        assert report[store]["questions"] == 500
        assert report[store]["recall_at_1"] >= 0.9
        assert 0 < report[store]["lookup_ms"]["p95"] < 1000
