"""Scale benchmark: keel on real documentation nobody here wrote, in three tiers.

Installs nothing: it reads the HTML manuals where Debian's doc packages put them (`dpkg -L`):
tier 1 Python 3.11 + PostgreSQL 15 (`python3.11-doc`, `postgresql-doc-15`), tier 2 adds Linux 6.1
(`linux-doc-6.1`), tier 3 adds Rust (`rust-doc`); or any folder of documents (`--docs DIR`, one
tier). Each tier's new pages are ingested by `keel ingest` into the same stores (pages linked into
one folder, ids relative to it), then served, and the bench prints per tier: ingest chunks/s (wall)
and the ingest process's peak RSS, restart-to-ready (`keel serve` until `/readyz` answers 200) and
the server's peak RSS, turn, retrieve, rerank and generate p50/p95 over built-in questions (the
extractive answerer, cache off; nodes from `node.finished`), failed questions, `/readyz`, paging `GET /v1/documents`,
the seconds until a page uploaded through one replica is answerable on a second one, and SciFact
train nDCG@10 with the tier as distractors (`keel eval --with-corpus`).

The embedded store serves one process, so the replica number needs the server deployment:
`--postgres-url` (or KEEL_DATABASE_URL) runs everything on Postgres and a `chroma run` server.

    python -m scripts.corpus_bench --tiers 1,2 --postgres-url postgresql://postgres@127.0.0.1/db
"""

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

from cli.process import ServerProcess, free_port
from cli.wire import Wire
from corpus.loaders import SUPPORTED_SUFFIXES
from evals import SCIFACT
from scripts.peer_bench import REPO, _chroma_server, _env, _pct, _print_table

TIERS: dict[int, tuple[str, ...]] = {
    1: ("python3.11-doc", "postgresql-doc-15"),
    2: ("linux-doc-6.1",),
    3: ("rust-doc",),
}
DOC_ROOT = Path("/usr/share/doc")
QUESTIONS = [
    "How do I create an index concurrently in PostgreSQL?",
    "What does asyncio.gather do?",
    "How do I read a file line by line in Python?",
    "What isolation levels does PostgreSQL support?",
    "How does VACUUM reclaim storage?",
    "What is the difference between a list and a tuple in Python?",
    "How do I define a dataclass with default values?",
    "How do I configure streaming replication in PostgreSQL?",
    "What does the GIL protect in CPython?",
    "How do I use a context manager with the with statement?",
    "What is a partial index?",
    "How does EXPLAIN ANALYZE show query plans?",
    "How do I parse command line arguments with argparse?",
    "What does functools.lru_cache do?",
    "How do I create a virtual environment with venv?",
    "What are PostgreSQL advisory locks?",
    "How do I write a window function in SQL?",
    "What does the json module's dumps function return?",
    "How does pg_dump back up a database?",
    "What is a generator expression?",
    "How do I schedule a task in the Linux kernel with a workqueue?",
    "What does the kernel's cgroup memory controller limit?",
    "How do I enable dynamic debug messages in the kernel?",
    "What is the Linux kernel's RCU mechanism?",
    "How are kernel modules loaded with modprobe parameters?",
    "What does the Rust borrow checker enforce?",
    "How do I iterate over a HashMap in Rust?",
    "What does Option::unwrap_or do?",
    "How do I spawn a thread in Rust?",
    "What is the difference between String and &str in Rust?",
]
UNIQUE_FACT = "The {word} beacon at Kestrel Point flashes green every {n} seconds."


def package_pages(package: str) -> list[Path]:
    """The HTML files a Debian package installed (`dpkg -L`); empty when it is not installed."""
    listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listed.returncode != 0:
        return []
    paths = (Path(line) for line in listed.stdout.splitlines())
    return sorted(p for p in paths if p.suffix in (".html", ".htm") and p.is_file())


def folder_pages(folder: Path) -> list[Path]:
    """The documents keel can ingest under `folder`."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
    )


def interleave(groups: list[list[Path]], limit: int | None) -> list[Path]:
    """Pages taken in turn from each group (a package), up to `limit` in all."""
    out: list[Path] = []
    for index in range(max((len(g) for g in groups), default=0)):
        out += [g[index] for g in groups if index < len(g)]
    return out[:limit] if limit else out


def link_pages(pages: list[Path], base: Path, farm: Path) -> list[Path]:
    """Links each page into `farm` at its path below `base`; returns the top-level folders (or
    files) that hold them, the arguments `keel ingest` gets."""
    tops = set()
    for page in pages:
        relative = page.relative_to(base if page.is_relative_to(base) else Path("/"))
        target = farm / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(page)
        tops.add(farm / relative.parts[0])
    return sorted(tops)


def run_measured(
    command: list[str], env: dict[str, str], log: Path
) -> tuple[int, float, float, str]:
    """Runs `command` to its end: (exit status, wall seconds, peak RSS in MB, stdout)."""
    started = time.perf_counter()
    with log.open("ab") as err, tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    return proc.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024, stdout


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory (VmHWM) of a process and its children, in MB."""
    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(OSError, psutil.Error):
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
    return total


async def ask(url: str, questions: list[str]) -> dict[str, Any]:
    """Each question on a new thread, streamed one after the other: turn and node times,
    failures (`run.error` or an HTTP error) and answers with a citation."""
    wire = Wire(url)
    turns, failed, cited = [], 0, 0
    nodes: dict[str, list[float]] = {}
    for question in questions:
        try:
            thread_id = (await wire.post_json("/v1/threads", {}))["thread_id"]
            body = {"message": question, "context": {"use_cache": False}}
            started = time.perf_counter()
            async for event, data in wire.events(f"/v1/threads/{thread_id}/runs/stream", body):
                payload = json.loads(data) if data else {}
                if event == "node.finished":
                    nodes.setdefault(payload["node"], []).append(payload["duration_ms"])
                elif event == "run.error":
                    failed += 1
                elif event == "run.finished":
                    cited += bool(payload.get("citations"))
            turns.append((time.perf_counter() - started) * 1000)
        except (OSError, EOFError, RuntimeError, ValueError, KeyError):
            failed += 1
            await wire.aclose()
    await wire.aclose()
    return {"turns": turns, "nodes": nodes, "failed": failed, "cited": cited}


def page_documents(url: str) -> dict[str, Any]:
    """Pages through `GET /v1/documents` (1,000 a page): documents, chunks, seconds, or the
    first error status."""
    documents = chunks = 0
    cursor: str | None = ""
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=120) as client:
        while cursor is not None:
            params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            response = client.get("/v1/documents", params=params)
            if response.status_code != 200:
                return {"error": response.status_code, "documents": documents}
            body = response.json()
            documents += len(body["documents"])
            chunks += sum(d["chunks"] for d in body["documents"])
            cursor = body["next_cursor"]
    return {"documents": documents, "chunks": chunks, "seconds": time.perf_counter() - started}


def propagation_s(first: str, second: str, timeout_s: float = 60) -> float | None:
    """Seconds from a page's upload through `first` until a question about it, asked on
    `second`, cites it (None past `timeout_s`); the page is deleted again."""
    word = uuid.uuid4().hex[:10]
    name = f"corpus-bench-{word}.md"
    text = f"# Kestrel Point\n\n{UNIQUE_FACT.format(word=word, n=7)}\n"
    question = f"How often does the {word} beacon at Kestrel Point flash?"
    with httpx.Client(timeout=120) as client:
        client.post(f"{first}/v1/documents", files=[("files", (name, text))]).raise_for_status()
        uploaded = time.perf_counter()
        try:
            while time.perf_counter() - uploaded < timeout_s:
                thread = client.post(f"{second}/v1/threads").json()["thread_id"]
                answer = client.post(
                    f"{second}/v1/threads/{thread}/runs/wait",
                    json={"message": question, "context": {"use_cache": False}},
                ).json()
                if any(c.get("source") == name for c in answer.get("citations", [])):
                    return time.perf_counter() - uploaded
                time.sleep(0.1)
            return None
        finally:
            client.delete(f"{first}/v1/documents/{name}")


def scifact_ndcg(
    env: dict[str, str], corpus: Path, out: Path, limit: int | None, abstracts: int | None
) -> str:
    """SciFact train nDCG@10 with `corpus` as distractors, through `keel eval --with-corpus`
    (the first `limit` claims, beside `abstracts` of the other abstracts; default all);
    "n/a (...)" with its last error line when the command fails."""
    command = [sys.executable, "-m", "cli.main", "eval", "--dataset", str(SCIFACT)]
    command += ["--split", "train", "--with-corpus", str(corpus), "--out", str(out)]
    command += ["--no-plots", "--no-progress"] + (["--limit", str(limit)] if limit else [])
    command += ["--distractors", str(abstracts)] if abstracts is not None else []
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"n/a ({last[:120]})"
    summary = json.loads((out / "summary.json").read_text())
    return f"{summary['configs'][0]['metrics']['ndcg@10']:.4f}"


def tier_pages(args: argparse.Namespace) -> dict[int, tuple[Path, list[Path]]]:
    """Per tier: the folder its pages are named from, and its new pages."""
    if args.docs:
        docs = args.docs.resolve()
        return {1: (docs, interleave([folder_pages(docs)], args.limit_pages))}
    tiers = {}
    for tier in args.tiers:
        groups = [package_pages(package) for package in TIERS[tier]]
        missing = [p for p, g in zip(TIERS[tier], groups, strict=True) if not g]
        if missing:
            raise SystemExit(
                f"corpus_bench: not installed: {', '.join(missing)} (apt-get install "
                f"{' '.join(missing)}), or pass --docs DIR"
            )
        tiers[tier] = (DOC_ROOT, interleave(groups, args.limit_pages))
    return tiers


def bench_tier(
    tier: int,
    pages: list[Path],
    base: Path,
    work: Path,
    env: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Ingests one tier's new pages, serves the stores, measures; one table row."""
    farm = work / "pages"
    tops = link_pages(pages, base, farm)
    logs = Path(env["KEEL_DATA_DIR"]) / "bench-logs"  # kept beside the stores, for failures
    logs.mkdir(exist_ok=True)
    log = logs / f"ingest{tier}.log"
    ingest = [sys.executable, "-m", "cli.main", "ingest", "--root", str(farm)]
    status, wall, ingest_rss, stdout = run_measured(ingest + [str(t) for t in tops], env, log)
    if status != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"keel ingest exited with {status} ({log}):\n{tail}")
    report = json.loads(stdout)
    questions = QUESTIONS[: args.questions]
    row: dict[str, Any] = {
        "tier": tier,
        "pages": len(pages),
        "skipped": len(report["skipped"]),
        "chunks_added": report["chunks_added"],
        "ingest_chunks_per_s": round(report["chunks_added"] / wall, 1),
        "ingest_peak_rss_mb": round(ingest_rss),
    }
    serve = [sys.executable, "-m", "cli.main", "serve", "--port"]
    port = free_port()
    started = time.perf_counter()
    with ServerProcess(
        [*serve, str(port)], port, env, logs / f"serve{tier}.log", "/readyz", 600, REPO
    ) as server:
        row["restart_to_ready_s"] = round(time.perf_counter() - started, 2)
        asked = asyncio.run(ask(server.url, questions))
        listing = page_documents(server.url)
        row["chunks"] = listing.get("chunks", "n/a")
        row["readyz"] = httpx.get(f"{server.url}/readyz", timeout=30).status_code
        row["listing"] = (
            f"{listing['documents']} docs in {listing['seconds']:.1f} s"
            if "seconds" in listing
            else f"failed ({listing['error']})"
        )
        row["turn_p50_ms"] = round(_pct(asked["turns"], 0.5), 1) if asked["turns"] else "n/a"
        row["turn_p95_ms"] = round(_pct(asked["turns"], 0.95), 1) if asked["turns"] else "n/a"
        for node in ("retrieve", "rerank", "generate"):
            times = asked["nodes"].get(node, [])
            row[f"{node}_p50_ms"] = round(_pct(times, 0.5), 1) if times else "n/a"
            row[f"{node}_p95_ms"] = round(_pct(times, 0.95), 1) if times else "n/a"
        row["failed_questions"] = asked["failed"]
        row["cited_answers"] = f"{asked['cited']}/{len(questions)}"
        if "KEEL_CHROMA_URL" in env:
            port2 = free_port()
            with ServerProcess(
                [*serve, str(port2)], port2, env, logs / f"replica{tier}.log", "/readyz", 600, REPO
            ) as second:
                seconds = propagation_s(server.url, second.url)
            row["replica_visible_s"] = round(seconds, 2) if seconds is not None else "timeout"
        else:
            row["replica_visible_s"] = "n/a (embedded store: one server; pass --postgres-url)"
        row["server_peak_rss_mb"] = round(peak_rss_mb(server.proc.pid))
    if args.skip_scifact:
        row["scifact_ndcg10"] = "skipped"
    else:
        row["scifact_ndcg10"] = scifact_ndcg(
            env, farm, work / f"eval{tier}", args.scifact_limit, args.scifact_abstracts
        )
    return row


def main(argv: list[str] | None = None) -> int:
    """Runs the tiers in order on one set of stores; prints a Markdown table (and JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default="1,2,3", help="comma-separated tiers (1, 2, 3)")
    parser.add_argument(
        "--docs", type=Path, help="one tier from this folder of documents instead of packages"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="the stores (kept; a rerun skips unchanged pages)"
    )
    parser.add_argument(
        "--questions",
        type=int,
        default=len(QUESTIONS),
        help=f"how many of the {len(QUESTIONS)} built-in questions to ask",
    )
    parser.add_argument("--limit-pages", type=int, help="at most N new pages per tier (smoke)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("KEEL_DATABASE_URL"),
        help="serve on Postgres and a Chroma server (two replicas can then share the stores)",
    )
    parser.add_argument("--scifact-limit", type=int, help="SciFact claims evaluated (default all)")
    parser.add_argument(
        "--scifact-abstracts",
        type=int,
        help="SciFact abstracts beside the claims' own (default all 5,183; a smoke needs few)",
    )
    parser.add_argument("--skip-scifact", action="store_true", help="no SciFact evaluation")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    args.tiers = sorted({int(t) for t in args.tiers.split(",")})
    if args.docs:
        args.tiers = [1]
    elif not set(args.tiers) <= set(TIERS):
        parser.error(f"tiers are {sorted(TIERS)}")
    tiers = tier_pages(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        data_dir = (args.data_dir or work / "data").resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        extra: dict[str, str] = {}
        if args.postgres_url:
            (data_dir / "server").mkdir(exist_ok=True)
            chroma = stack.enter_context(_chroma_server(data_dir / "server"))
            extra = {
                "KEEL_DATABASE_URL": args.postgres_url,
                "KEEL_CORPUS_URL": args.postgres_url,
                "KEEL_CHROMA_URL": chroma.url,
                # The database outlives this run's Chroma server and lexical folder.
                "KEEL_COLLECTION": f"bench{uuid.uuid4().hex[:8]}",
            }
        env = _env(data_dir, **extra)
        for tier, (base, pages) in tiers.items():
            row = bench_tier(tier, pages, base, work, env, args)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    _print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if len(rows) > 1 and all(isinstance(r["turn_p95_ms"], float) for r in rows):
        print(
            f"turn p95, last tier / first: {rows[-1]['turn_p95_ms'] / rows[0]['turn_p95_ms']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
