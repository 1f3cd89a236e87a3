"""`keel serve`'s uvicorn server, which drains on SIGTERM before it stops."""

import asyncio
import logging
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("keel")


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM: `/readyz` answers 503 at once, the replica claims no more runs,
    running runs get `drain_timeout_s` to finish, then open streams end with a `retry:` hint
    and uvicorn shuts down (runs still running are handed back to another replica from their
    last checkpoint). A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout_s: float):
        super().__init__(config)
        self.app, self.drain_timeout_s = app, drain_timeout_s
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        keel = getattr(self.app.state, "keel", None)
        if sig != signal.SIGTERM or self._draining is not None or keel is None:
            super().handle_exit(sig, frame)
            return
        self._draining = asyncio.get_event_loop().create_task(self._drain(keel))

    async def _drain(self, keel: object) -> None:
        log.info("SIGTERM: draining (up to %.0f s)", self.drain_timeout_s)
        left = await keel.runs.drain(self.drain_timeout_s)  # type: ignore[attr-defined]
        if left:
            log.warning("drain timeout: handing %d running runs to another replica", left)
        self.should_exit = True


def serve(app: FastAPI, host: str, port: int, drain_timeout_s: float) -> None:
    """Runs `app` until SIGTERM (drained) or SIGINT."""
    # keel logs each request itself (JSON, with trace ids): no uvicorn logging config or access log.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    DrainingServer(config, app, drain_timeout_s).run()
