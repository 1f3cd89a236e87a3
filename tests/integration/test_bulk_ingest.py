"""Bulk ingestion as people do it, on real stores and real processes: a folder with pages
without text ingests the rest and names them, batches commit as they go (an interrupted run
resumes by content hash), repeated ids across batches fail before any write, uploads behave the
same, and `keel ingest`/`keel docs` outside the checkout find the running server."""

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import httpx
import pytest

from cli.process import free_port
from corpus import open_corpora
from corpus.ingest import BATCH_DOCS, ingest_batches, load_batches, prefetched_batches
from corpus.loaders import check_unique_sources, iter_paths
from graph.errors import DuplicateDocuments
from graph.settings import Settings
from tests.conftest import ROOT

PAGES = BATCH_DOCS + 50  # two batches
EMPTY_PAGE = "<html><head><title>Index</title></head><body><nav>Home</nav></body></html>"


def keel(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`keel ARGS` as a user runs it in another shell: no developer KEEL_ settings, no terminal."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def manual(folder: Path, pages: int = PAGES) -> Path:
    """A folder of `pages` HTML pages with text, two without any, and a broken PDF."""
    folder.mkdir(parents=True)
    for n in range(pages):
        (folder / f"page-{n:04d}.html").write_text(
            f"<html><body><main><h1>Page {n}</h1><p>Lighthouse {n} shines over bay {n} "
            f"every night from dusk to dawn.</p></main></body></html>"
        )
    (folder / "genindex.html").write_text(EMPTY_PAGE)
    (folder / "search.html").write_text(EMPTY_PAGE)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    return folder


def test_folder_ingests_what_it_can_names_skipped_files_and_strict_writes_nothing(
    tmp_path: Path,
):
    docs = manual(tmp_path / "docs")
    env = {"KEEL_DATA_DIR": str(tmp_path / "data"), "KEEL_PORT": str(free_port())}
    done = keel("ingest", "docs", cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["documents"] == PAGES and report["chunks_added"] == PAGES
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert skipped.keys() == {"docs/genindex.html", "docs/search.html", "docs/broken.pdf"}
    assert skipped["docs/genindex.html"] == "no text found"
    assert skipped["docs/broken.pdf"].startswith("cannot be read as .pdf")
    assert "keel: skipped docs/search.html: no text found" in done.stderr
    # Not a terminal: no progress bar, no escapes; the store written to is named.
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    assert f"on the local store {tmp_path / 'data'}" in done.stderr

    (docs / "new.md").write_text("# New\n\nA page added later.")
    strict = keel("ingest", "--strict", "docs", cwd=tmp_path, **env)
    assert strict.returncode == 1
    assert json.loads(strict.stdout)["documents"] == 0
    assert "nothing written" in strict.stderr
    listed = keel("docs", "list", cwd=tmp_path, **env)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == PAGES

    # A rerun skips unchanged documents by content hash and adds the new one.
    again = json.loads(keel("ingest", "docs", cwd=tmp_path, **env).stdout)
    assert again["documents_unchanged"] == PAGES and again["chunks_added"] == 1

    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "index.html").write_text(EMPTY_PAGE)
    failed = keel("ingest", "nothing", cwd=tmp_path, **env)
    assert failed.returncode == 1 and "nothing could be ingested" in failed.stderr


def test_an_interrupted_run_keeps_its_finished_batches_and_resumes(tmp_path: Path):
    manual(tmp_path / "docs")
    sources = list(iter_paths([tmp_path / "docs"], tmp_path))
    corpus = open_corpora(Settings(data_dir=tmp_path / "data")).get()

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_batches(corpus, load_batches(sources), on_batch=interrupt)
    first, _ = corpus.documents(1000)
    assert len(first) == BATCH_DOCS  # the first batch was committed
    report, skipped = ingest_batches(corpus, prefetched_batches(sources))
    outcomes = list(report.outcomes.values())
    assert (
        outcomes.count("unchanged") == BATCH_DOCS and outcomes.count("added") == PAGES - BATCH_DOCS
    )
    assert len(skipped) == 3


def test_an_id_repeated_across_batches_fails_before_any_write(tmp_path: Path):
    folder = tmp_path / "rows"
    folder.mkdir()
    rows = [{"id": f"r{n}", "text": f"Row {n} about tides."} for n in range(BATCH_DOCS)]
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "b.jsonl").write_text(json.dumps({"id": "r7", "text": "Again."}) + "\n")
    with pytest.raises(DuplicateDocuments, match=r"r7 \(from \S+a\.jsonl, \S+b\.jsonl\)"):
        check_unique_sources(list(iter_paths([folder], tmp_path)))
    env = {"KEEL_DATA_DIR": str(tmp_path / "data"), "KEEL_PORT": str(free_port())}
    refused = keel("ingest", "rows", cwd=tmp_path, **env)
    assert refused.returncode == 2 and "r7 (from rows/a.jsonl, rows/b.jsonl)" in refused.stderr
    assert not (tmp_path / "data" / "chroma").exists()


def test_progress_on_a_terminal_shows_rates_and_an_eta(tmp_path: Path):
    manual(tmp_path / "docs", pages=20)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env = {**clean, "PYTHONPATH": str(ROOT), "KEEL_DATA_DIR": str(tmp_path / "data")}
    env["KEEL_PORT"] = str(free_port())
    controller, terminal = pty.openpty()
    # A terminal of 24 rows and 160 columns (a new pty has none: tqdm would draw nothing).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "ingest", "docs"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=terminal,
        timeout=300,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            part = os.read(controller, 65536)
        except OSError:
            break
        if not part:
            break
        shown += part
    os.close(controller)
    assert done.returncode == 0
    text = shown.decode(errors="replace")
    assert "docs/s" in text and "chunks/s" in text and "23/23 files" in text
    assert "<00:00" in text or "?" in text  # tqdm's ETA field
    assert json.loads(done.stdout)["documents"] == 20  # stdout stays plain JSON


def test_uploads_skip_files_without_text_and_batches_fit_the_server(start_server, tmp_path: Path):
    server = start_server(KEEL_DATA_DIR=str(tmp_path / "data"))
    url = f"{server.url}/v1/documents"
    page = b"<html><body><main><p>The ferry leaves at noon.</p></main></body></html>"
    mixed = httpx.post(
        url,
        files=[("files", ("ferry.html", page)), ("files", ("index.html", EMPTY_PAGE.encode()))],
        timeout=120,
    )
    assert mixed.status_code == 201, mixed.text
    assert mixed.json()["outcomes"] == {"ferry.html": "added"}
    assert mixed.json()["skipped"] == [{"path": "index.html", "reason": "no text found"}]
    empty = httpx.post(url, files=[("files", ("index.html", EMPTY_PAGE.encode()))], timeout=60)
    assert empty.status_code == 422
    assert empty.json()["error"] == {
        "code": "nothing_ingested",
        "message": "nothing in the upload could be ingested: index.html: no text found",
    }
    many = [("files", (f"n{n}.txt", b"x")) for n in range(1001)]
    refused = httpx.post(url, files=many, timeout=60)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "too_many_files"
    assert "at most 1000 files" in refused.json()["error"]["message"]

    # 1,200 files (more than a request may hold) go in batches; skipped ones are named locally.
    folder = tmp_path / "notes"
    folder.mkdir()
    for n in range(1200):
        (folder / f"note-{n:04d}.txt").write_text(f"Note {n}: the tide table of pier {n}.")
    (folder / "blank.html").write_text(EMPTY_PAGE)
    done = keel("ingest", "--url", server.url, "notes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["documents"] == 1200 and report["via"] == server.url
    assert report["skipped"] == [{"path": "notes/blank.html", "reason": "no text found"}]
    # The first upload above, then 1,200 files in three requests of at most 500.
    assert server.tail(5000).count('"route": "/v1/documents", "status": 201') == 4


def test_commands_outside_the_checkout_find_the_server_or_say_where_they_write(
    start_server, tmp_path: Path
):
    port = free_port()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "owls.md").write_text("# Owls\n\nThe barn owl hunts voles over the meadow.")
    # Nothing answers on the port: the local store is named, by its absolute path.
    local = keel("ingest", "owls.md", cwd=elsewhere, KEEL_PORT=str(port))
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["via"] == "local"
    assert f"on the local store {elsewhere / '.keel'} (no keel server at" in local.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = keel("docs", "list", cwd=empty, KEEL_PORT=str(port))
    assert listed.returncode == 2 and "no local store in" in listed.stderr
    assert not (empty / ".keel").exists()

    server = start_server(KEEL_DATA_DIR=str(tmp_path / "served"))
    for found in (
        keel("ingest", "owls.md", cwd=elsewhere, KEEL_URL=server.url),
        keel("ingest", "owls.md", cwd=elsewhere, KEEL_PORT=str(server.port)),
    ):
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["via"] == server.url
    assert "through the keel server at" in found.stderr
    rows = keel("docs", "list", "--json", cwd=empty, KEEL_PORT=str(server.port))
    assert [json.loads(line)["id"] for line in rows.stdout.splitlines()] == ["owls.md"]
    assert not (empty / ".keel").exists()
    # KEEL_DATA_DIR names a store: used even with a server on the default port.
    pinned = keel(
        "ingest", "owls.md", cwd=elsewhere, KEEL_PORT=str(server.port),
        KEEL_DATA_DIR=str(tmp_path / "pinned"),
    )  # fmt: skip
    assert json.loads(pinned.stdout)["via"] == "local"


def test_a_run_stopped_by_the_server_reports_what_it_stored(start_server, tmp_path: Path):
    # One request a minute: the second batch of uploads is refused (429) after the first landed.
    server = start_server(KEEL_DATA_DIR=str(tmp_path / "data"), KEEL_RATE_LIMIT_RPM="1")
    folder = tmp_path / "notes"
    folder.mkdir()
    for n in range(600):
        (folder / f"note-{n:04d}.txt").write_text(f"Note {n}: the ferry to island {n}.")
    done = keel("ingest", "--url", server.url, "notes", cwd=tmp_path)
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["documents"] == 500 and "429 (rate_limited" in report["error"]
    assert "the 500 documents before it are stored, and a rerun skips them" in done.stderr
