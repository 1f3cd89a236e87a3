"""Documents on real processes: ids from relative paths, replacement, duplicates refused before
any write, listing, sections in citations, and `keel ingest`/`keel docs` next to a running
`keel serve` on the same embedded data dir (routed through it; a second server refuses)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.auth import hash_key
from cli.datadir import LOCK_NAME
from tests.conftest import ROOT

HARBOR = """# Harbor

The Harbor lighthouse was built in 1874 and still guides ships at night.

## Opening hours

Visitors may climb the lighthouse tower from April to October, every day but Monday.
"""


def keel(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`keel ARGS` as its own process (the CLI a user runs in another shell)."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def ask(client: httpx.Client, question: str) -> dict:
    thread_id = client.post("/v1/threads").json()["thread_id"]
    response = client.post(
        f"/v1/threads/{thread_id}/runs/wait",
        json={"message": question, "context": {"use_cache": False}},
    )
    assert response.status_code == 200, response.text
    return response.json()


def upload(client: httpx.Client, *files: tuple[str, bytes]) -> httpx.Response:
    return client.post("/v1/documents", files=[("files", f) for f in files])


def listing(client: httpx.Client, **params: str | int) -> dict:
    response = client.get("/v1/documents", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_ids_replacement_duplicates_listing_and_sections(start_server, data_dir: Path):
    server = start_server(KEEL_DATA_DIR=str(data_dir))
    with httpx.Client(base_url=server.url, timeout=120) as client:
        before = {d["id"] for d in listing(client, limit=1000)["documents"]}
        first = upload(
            client,
            ("a/notes.md", b"# Notes\n\nThe walrus colony counts forty animals."),
            ("b/notes.md", b"# Notes\n\nThe pelican colony counts ninety birds."),
            ("harbor.md", HARBOR.encode()),
            ("cafe.txt", "Le café de la gare ouvre à sept heures.".encode("latin-1")),
        )
        assert first.status_code == 201, first.text
        assert first.json()["outcomes"] == {
            "a/notes.md": "added",
            "b/notes.md": "added",
            "harbor.md": "added",
            "cafe.txt": "added",
        }
        again = upload(
            client,
            ("a/notes.md", b"# Notes\n\nThe walrus colony counts forty-two animals."),
            ("b/notes.md", b"# Notes\n\nThe pelican colony counts ninety birds."),
        )
        assert again.json()["outcomes"] == {"a/notes.md": "replaced", "b/notes.md": "unchanged"}
        assert again.json()["documents_replaced"] == 1

        # Duplicates inside one request, or a JSONL repeating an id: 422 naming them, no write.
        version = again.json()["corpus_version"]
        twice = upload(client, ("notes.md", b"One."), ("notes.md", b"Two."))
        assert twice.status_code == 422, twice.text
        assert twice.json()["error"]["code"] == "duplicate_documents"
        assert "notes.md" in twice.json()["error"]["message"]
        rows = b'{"id": "r1", "text": "One."}\n{"id": "r2", "text": "Two."}\n{"id": "r1", "text": "3"}\n'
        repeated = upload(client, ("rows.jsonl", rows))
        assert repeated.status_code == 422 and "r1 (lines 1 and 3)" in repeated.text

        docs = listing(client, limit=1000)["documents"]
        added = {d["id"]: d for d in docs if d["id"] not in before}
        assert set(added) == {"a/notes.md", "b/notes.md", "harbor.md", "cafe.txt"}
        assert added["harbor.md"]["title"] == "Harbor" and added["harbor.md"]["chunks"] == 2
        assert added["a/notes.md"]["source"] == "a/notes.md"
        assert added["a/notes.md"]["ingested_at"] >= added["b/notes.md"]["ingested_at"]
        assert added["cafe.txt"]["ingested_at"].endswith("+00:00")
        # Pages of two, in id order, cover the listing exactly once.
        seen, cursor = [], None
        while True:
            page = listing(client, limit=2, **({"cursor": cursor} if cursor else {}))
            assert len(page["documents"]) <= 2
            seen += [d["id"] for d in page["documents"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(d["id"] for d in docs)

        walrus = ask(client, "How many animals does the walrus colony count?")
        assert walrus["citations"][0]["id"].startswith("a/notes.md#")
        assert "forty-two" in walrus["answer"]
        hours = ask(client, "When can visitors climb the lighthouse tower?")
        cited = hours["citations"][0]
        assert cited["source"] == "harbor.md" and cited["section"] == "Harbor > Opening hours"
        assert "#" not in hours["answer"] and "Opening hours Visitors" not in hours["answer"]
        assert all(
            set(c) >= {"n", "id", "source", "snippet", "section"} for c in hours["citations"]
        )

        gone = client.delete("/v1/documents/a/notes.md")
        assert gone.status_code == 204
        assert "a/notes.md" not in {d["id"] for d in listing(client, limit=1000)["documents"]}
        assert listing(client, limit=1000)["documents"] and version > 0


def test_ingest_while_serving_goes_through_the_server(start_server, data_dir: Path, tmp_path: Path):
    env = {"KEEL_DATA_DIR": str(data_dir), "KEEL_API_KEY": "k-ingest"}
    server = start_server(**env, KEEL_API_KEYS=json.dumps({hash_key("k-ingest"): "default"}))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "facts.md").write_text(
        "# Quokkas\n\nThe quokka colony on Rottnest Island numbers about twelve thousand animals."
    )
    # The lock file names the server that owns the data dir.
    owner = json.loads((data_dir / LOCK_NAME).read_text())
    assert owner["command"] == "serve" and owner["url"] == server.url
    assert owner["pid"] == server.proc.pid

    ingested = keel("ingest", "--quiet", "facts.md", env=env, cwd=docs)
    assert ingested.returncode == 0, ingested.stderr
    assert f"keel ingest: through {server.url}, the server that owns" in ingested.stderr
    report = json.loads(ingested.stdout)
    assert report["via"] == server.url and report["documents"] == 1
    headers = {"X-API-Key": "k-ingest"}
    with httpx.Client(base_url=server.url, timeout=120, headers=headers) as client:
        answer = ask(client, "How many quokkas live on Rottnest Island?")
        assert answer["citations"][0]["source"] == "facts.md", answer
        assert answer["citations"][0]["section"] == "Quokkas"
        assert not answer["degraded"]
    replaced = keel("ingest", "--quiet", "facts.md", env=env, cwd=docs)
    assert json.loads(replaced.stdout)["documents_unchanged"] == 1

    listed = keel("docs", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    refused = keel("docs", "list", "--api-key", "wrong", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "answered 401" in refused.stderr
    assert any(line.startswith("facts.md\t1 chunks\t") for line in listed.stdout.splitlines())

    # A second server on the same embedded data dir refuses, naming the first.
    second = keel("serve", "--port", "1", env=env, cwd=ROOT)
    assert second.returncode == 2
    assert f"in use by keel serve (pid {server.proc.pid}, {server.url})" in second.stderr

    deleted = keel("docs", "delete", "facts.md", "missing.md", env=env, cwd=tmp_path)
    assert deleted.returncode == 1
    assert "deleted facts.md" in deleted.stdout and "missing.md not found" in deleted.stderr

    # A crashed server leaves its record but no lock: the next command works on the store.
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    assert json.loads((data_dir / LOCK_NAME).read_text())["pid"] == server.proc.pid
    local = keel("ingest", "--quiet", "facts.md", env=env, cwd=docs)
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["via"] == "local"
    restarted = start_server(**env)
    with httpx.Client(base_url=restarted.url, timeout=120) as client:
        answer = ask(client, "How many quokkas live on Rottnest Island?")
        assert answer["citations"][0]["source"] == "facts.md"


def test_direct_ingestion_with_a_chroma_server_reaches_the_running_server(
    start_server, chroma_url: str, tmp_path: Path
):
    """With a Chroma server, `keel ingest` writes directly (no lock, no routing) and the running
    keel server notices the new corpus version by itself."""
    env = {"KEEL_DATA_DIR": str(tmp_path / "data"), "KEEL_CHROMA_URL": chroma_url}
    server = start_server(**env)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "owls.md").write_text(
        "# Owls\n\nThe barn owl of Harbor Wood hunts voles over the meadow every night."
    )
    with httpx.Client(base_url=server.url, timeout=120) as client:
        assert ask(client, "What does the barn owl of Harbor Wood hunt?")["citations"] == []
        ingested = keel("ingest", "--quiet", "owls.md", env=env, cwd=docs)
        assert ingested.returncode == 0, ingested.stderr
        assert json.loads(ingested.stdout)["via"] == "local"
        assert not (tmp_path / "data" / LOCK_NAME).exists()
        # "Within seconds": Chroma's server caches a collection's metadata (the corpus
        # version) for a moment, so the first turns after the ingest may not see it yet.
        deadline = time.monotonic() + 15
        while not (answer := ask(client, "What does the barn owl of Harbor Wood hunt?"))[
            "citations"
        ]:
            assert time.monotonic() < deadline, answer
            time.sleep(0.5)
        assert answer["citations"][0]["source"] == "owls.md", answer
        assert answer["citations"][0]["section"] == "Owls"
