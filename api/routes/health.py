"""Liveness, readiness and startup probes (`/livez`, `/readyz`, `/startupz`), and the older
`/health` and `/ready`."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import KeelDep
from api.schemas import Readiness

router = APIRouter(tags=["health"])


@router.get("/health")
@router.get("/livez")
async def health() -> dict[str, str]:
    """The process is up (no dependency is checked: a restart would not fix one)."""
    return {"status": "ok"}


@router.get("/startupz", responses={503: {"description": "startup has not finished"}})
async def startupz(request: Request) -> JSONResponse:
    """200 once the lifespan finished opening clients and starting the run manager."""
    started = getattr(request.app.state, "keel", None) is not None
    return JSONResponse(
        {"status": "started" if started else "starting"}, status_code=200 if started else 503
    )


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "draining, or a dependency is down"}},
)
async def readyz(keel: KeelDep) -> JSONResponse:
    """Whether to route new requests here: the database and Redis answer and the replica is not
    draining; 503 names the reasons otherwise."""
    checks: dict[str, str] = {}
    if keel.runs.draining:
        checks["drain"] = "draining"
    else:
        await _check(checks, "database", lambda: keel.persistence.runs.last_seq("__ready__"))
        await _check(checks, "cache", keel.deps.cache.ping)
    return _verdict(checks)


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is down"}},
)
async def ready(keel: KeelDep) -> JSONResponse:
    """Checks the checkpoint database, the vector store and the cache; 503 when one is down."""
    checks: dict[str, str] = {}
    await _check(
        checks,
        "checkpoints",
        lambda: keel.persistence.saver.aget_tuple(
            {"configurable": {"thread_id": "__ready__", "checkpoint_ns": ""}}
        ),
    )
    await _check(checks, "vector_store", lambda: asyncio.to_thread(keel.deps.corpora.heartbeat))
    await _check(checks, "cache", keel.deps.cache.ping)
    return _verdict(checks)


async def _check(checks: dict[str, str], name: str, probe: Callable[[], Awaitable[Any]]) -> None:
    try:
        await asyncio.wait_for(probe(), timeout=5)
        checks[name] = "ok"
    except Exception as exc:
        checks[name] = f"error: {type(exc).__name__}"


def _verdict(checks: dict[str, str]) -> JSONResponse:
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )
