"""Operator views of the replica: the LLM chain's circuit breakers."""

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import KeelDep, TenantDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class Breaker(BaseModel):
    """One LLM target's circuit breaker (shared by all replicas with Redis)."""

    target: str
    status: str
    cooldown_s: float
    open_for_s: float


@router.get("/breakers")
async def breakers(keel: KeelDep, _: TenantDep) -> list[Breaker]:
    """Each model of the provider chain with its breaker: closed, open or half-open."""
    return [Breaker(**state) for state in await keel.deps.llm.snapshot()]
