"""`GET /metrics`: the replica's Prometheus metrics (all workers' with PROMETHEUS_MULTIPROC_DIR)."""

import os
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from api.deps import KeelDep
from integrations import metrics

router = APIRouter(tags=["health"])


def _pool_gauges(keel: Any) -> None:
    """Connection pool gauges, read at scrape time."""
    pool: Any = getattr(keel.persistence.saver, "conn", None)
    if hasattr(pool, "get_stats"):  # Postgres: psycopg_pool's AsyncConnectionPool
        stats = pool.get_stats()
        metrics.DB_POOL.labels("open").set(stats.get("pool_size", 0))
        metrics.DB_POOL.labels("idle").set(stats.get("pool_available", 0))
        metrics.DB_POOL.labels("waiting").set(stats.get("requests_waiting", 0))
    client = getattr(keel.deps.cache, "_redis", None)
    redis_pool = getattr(client, "connection_pool", None)
    if redis_pool is not None:
        idle = len(getattr(redis_pool, "_available_connections", []))
        metrics.REDIS_POOL.labels("open").set(
            idle + len(getattr(redis_pool, "_in_use_connections", []))
        )
        metrics.REDIS_POOL.labels("idle").set(idle)


@router.get("/metrics", response_class=Response)
async def scrape(keel: KeelDep) -> Response:
    """Prometheus text exposition format."""
    _pool_gauges(keel)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
