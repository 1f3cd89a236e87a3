"""The uvicorn server that drains the app's runs before it stops serving."""

import asyncio
import logging
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("keel")


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT, drains (readiness fails at once, running runs finish or are
    handed back, streams end with a retry hint) and only then lets uvicorn shut down; a second
    signal falls through to uvicorn's own handling."""

    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        keel = getattr(self.app.state, "keel", None)
        if keel is None or self._loop is None or self._drain is not None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        # Signal handlers run between bytecodes: wake the loop rather than touch it here.
        self._loop.call_soon_threadsafe(self._begin_drain, keel)

    def _begin_drain(self, keel) -> None:  # type: ignore[no-untyped-def]
        if self._drain is None:
            self._drain = asyncio.create_task(self._drain_then_exit(keel))

    async def _drain_then_exit(self, keel) -> None:  # type: ignore[no-untyped-def]
        started = asyncio.get_running_loop().time()
        log.info("draining: up to %ss for running runs", keel.settings.drain_timeout)
        try:
            await keel.runs.drain(keel.settings.drain_timeout)
        finally:
            elapsed = asyncio.get_running_loop().time() - started
            log.info("drained in %.2fs; shutting down", elapsed)
            self.should_exit = True
