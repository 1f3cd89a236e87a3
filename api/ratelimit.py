"""HTTP edges of the per-tenant limits (`runtime.limits.Limiter`): 429 with `Retry-After`."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from api import audit
from api.deps import TenantDep
from api.errors import RateLimited
from runtime.limits import Limiter, seconds_to_midnight


async def get_limiter(request: Request) -> Limiter:
    """The replica's `Limiter` (built with the app)."""
    return request.app.state.limiter


LimiterDep = Annotated[Limiter, Depends(get_limiter)]


async def enforce_rate_limit(request: Request, tenant: TenantDep, limiter: LimiterDep) -> None:
    """Router dependency: 429 with `Retry-After` when the tenant is over its requests per minute."""
    if not limiter.rpm:
        return
    wait = await limiter.take(tenant)
    if wait > 0:
        audit.rate_limited(request, tenant, "requests_per_minute", wait)
        raise RateLimited(
            f"more than {limiter.rpm} requests per minute for this tenant", retry_after_s=wait
        )


async def enforce_token_quota(request: Request, tenant: TenantDep, limiter: LimiterDep) -> None:
    """Run-start dependency: 429 when the tenant spent its LLM tokens for this minute or for
    today (UTC)."""
    if limiter.tokens_per_minute:
        if await limiter.tokens_used(tenant, "minute") >= limiter.tokens_per_minute:
            wait = 60.0 - datetime.now(UTC).second
            audit.rate_limited(request, tenant, "tokens_per_minute", wait)
            raise RateLimited(
                f"{limiter.tokens_per_minute} tokens per minute used; retry next minute",
                retry_after_s=wait,
                code="quota_exceeded",
            )
    if not limiter.tokens_per_day:
        return
    if await limiter.tokens_used(tenant) >= limiter.tokens_per_day:
        wait = seconds_to_midnight()
        audit.rate_limited(request, tenant, "tokens_per_day", wait)
        raise RateLimited(
            f"daily quota of {limiter.tokens_per_day} tokens used; it resets at 00:00 UTC",
            retry_after_s=wait,
            code="quota_exceeded",
        )
