"""Probes: liveness, readiness (dependencies reachable, not draining), start-up."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import KeelDep
from api.schemas import Readiness

router = APIRouter(tags=["health"])


async def _check(checks: dict[str, str], name: str, probe: Callable[[], Awaitable[Any]]) -> None:
    try:
        await asyncio.wait_for(probe(), timeout=5)
        checks[name] = "ok"
    except Exception as exc:
        checks[name] = f"error: {type(exc).__name__}"


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is down"}},
)
async def ready(keel: KeelDep) -> JSONResponse:
    """Checks the checkpoint database, the corpus (chunk store, dense and lexical indexes answer
    queries) and the cache; 503 when one is down."""
    checks: dict[str, str] = {}
    await _check(
        checks,
        "checkpoints",
        lambda: keel.persistence.saver.aget_tuple(
            {"configurable": {"thread_id": "__ready__", "checkpoint_ns": ""}}
        ),
    )
    await _check(checks, "corpus", lambda: asyncio.to_thread(keel.deps.corpora.heartbeat))
    await _check(checks, "cache", keel.deps.cache.ping)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process serves HTTP (no dependency checked: a dead database must not restart pods)."""
    return {"status": "ok"}


@router.get("/startupz")
async def startupz(keel: KeelDep) -> dict[str, str]:
    """Start-up finished: stores opened, schema set up, graph compiled (the lifespan ran)."""
    return {"status": "started", "checkpoints": keel.persistence.kind}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "draining, or a dependency is down"}},
)
async def readyz(keel: KeelDep) -> JSONResponse:
    """Takes traffic: the database, the corpus and Redis answer and the replica is not
    draining."""
    checks: dict[str, str] = {"draining": "yes" if keel.runs.draining else "ok"}
    if not keel.runs.draining:
        await _check(
            checks,
            "database",
            lambda: keel.persistence.saver.aget_tuple(
                {"configurable": {"thread_id": "__ready__", "checkpoint_ns": ""}}
            ),
        )
        # A replica whose corpus fails queries would answer every question with an error.
        await _check(checks, "corpus", lambda: asyncio.to_thread(keel.deps.corpora.heartbeat))
        if keel.settings.redis_url:
            await _check(checks, "redis", keel.deps.cache.ping)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )
