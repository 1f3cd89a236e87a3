"""`keel serve`'s uvicorn server, which drains on SIGTERM before it stops, in this process or in
`KEEL_WORKERS` worker processes listening on one port."""

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn._subprocess import get_subprocess

from graph.errors import ConfigError
from graph.settings import Settings
from runtime import logs

log = logging.getLogger("keel")


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM: `/readyz` answers 503 at once, the replica claims no more runs,
    running runs get `drain_timeout_s` to finish, then open streams end with a `retry:` hint
    and uvicorn shuts down (runs still running are handed back to another replica from their
    last checkpoint). A repeated SIGTERM changes nothing (a process group's and a supervisor's
    may both arrive); SIGINT stops at once."""

    def __init__(self, config: uvicorn.Config, drain_timeout_s: float):
        super().__init__(config)
        self.drain_timeout_s = drain_timeout_s
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        keel = self._keel()
        if sig != signal.SIGTERM or keel is None:
            super().handle_exit(sig, frame)
        elif self._draining is None:
            self._draining = asyncio.get_event_loop().create_task(self._drain(keel))

    def _keel(self) -> Any:
        """The running app's `Keel` (None before startup), under uvicorn's middleware."""
        app = getattr(self.config, "loaded_app", None)
        while app is not None and not isinstance(app, FastAPI):
            app = getattr(app, "app", None)
        return getattr(app.state, "keel", None) if app is not None else None

    async def _drain(self, keel: Any) -> None:
        log.info("SIGTERM: draining (up to %.0f s)", self.drain_timeout_s)
        left = await keel.runs.drain(self.drain_timeout_s)
        if left:
            log.warning("drain timeout: handing %d running runs to another replica", left)
        self.should_exit = True


def _app(settings: Settings, verbose: bool) -> FastAPI:
    """The app of one server process (a worker process sets up its own logging)."""
    from api.app import create_app

    logs.configure(settings.log_format, verbose)
    return create_app(settings)


def check_workers(settings: Settings) -> None:
    """Several workers are several replicas on one socket: they need the shared stores."""
    if settings.workers < 1:
        raise ConfigError("KEEL_WORKERS must be at least 1")
    missing = [
        name
        for name, value in (
            ("KEEL_DATABASE_URL", settings.database_url),
            ("KEEL_CHROMA_URL", settings.chroma_url),
            ("KEEL_REDIS_URL", settings.redis_url),
        )
        if not value
    ]
    if settings.workers > 1 and missing:
        raise ConfigError(
            f"KEEL_WORKERS={settings.workers} needs the shared stores, as replicas do; "
            f"set {', '.join(missing)} (embedded stores serve one process)"
        )


def server_config(settings: Settings, verbose: bool = False) -> uvicorn.Config:
    """uvicorn's settings for `keel serve`: uvloop and httptools, named rather than left to
    uvicorn's "auto", which falls back silently to the pure-Python loop and parser when they
    are missing (as they were from keel's own dependencies: only the dev tools brought them)."""
    # keel logs each request itself (JSON, with trace ids): no uvicorn logging config or access log.
    return uvicorn.Config(
        functools.partial(_app, settings, verbose),
        factory=True,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def serve(settings: Settings, verbose: bool = False) -> int:
    """Serves until SIGTERM (drained) or SIGINT; returns the exit code."""
    check_workers(settings)
    config = server_config(settings, verbose)
    server = DrainingServer(config, settings.drain_timeout)
    if settings.workers == 1:
        server.run()
        return 0
    with _multiprocess_metrics():
        return _supervise(config, server, settings.workers)


@contextlib.contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """One scrape sums every worker's metrics: prometheus_client's multiprocess directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="keel-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def worker_sockets(config: uvicorn.Config, workers: int) -> list[socket.socket]:
    """One listening socket per worker, all on one port with SO_REUSEPORT, so the kernel spreads
    new connections over the workers by their addresses. On one shared socket whichever worker
    woke first took them: 16 streams opened together split 3 / 15 (9 / 9 this way), and
    keep-alive connections stay where they landed. A worker still starting gets none until it
    listens."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    port, sockets = config.port, []
    for _ in range(workers):
        sock = socket.socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((config.host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {config.host}:{port}: {exc}") from exc
        port = sock.getsockname()[1]  # port 0: the others join the port the first one got
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def _supervise(config: uvicorn.Config, server: DrainingServer, workers: int) -> int:
    """Runs `workers` processes, each on its own socket of one port. SIGTERM or SIGINT drains
    each of them; a worker that exits on its own stops the replica (exit code 1) so its supervisor
    restarts it whole: its runs resume elsewhere when their leases lapse, as after any crash."""
    sockets = worker_sockets(config, workers)
    processes = [get_subprocess(config, server.run, [sock]) for sock in sockets]
    stopping = False

    def stop(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for process in processes:
        process.start()
    log.info("serving on %s:%d with %d workers", config.host, config.port, workers)
    wait([process.sentinel for process in processes])
    crashed = not stopping
    if crashed:
        log.error("a worker exited unexpectedly: stopping the other workers")
        stop(signal.SIGTERM, None)
    for process in processes:
        process.join()
    for sock in sockets:
        sock.close()
    return 1 if crashed else 0
