"""FastAPI dependencies: the application's long-lived objects and the caller's tenant."""

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api import audit
from api.auth import Authenticator, AuthError
from api.errors import RateLimited, Unauthorized
from api.schemas import THREAD_ID_PATTERN
from runtime.keel import Keel


async def get_keel(request: Request) -> Keel:
    """The application's `Keel`, built in the lifespan (`async`: FastAPI runs a plain `def`
    dependency on a worker thread, a thread hop per request)."""
    return request.app.state.keel


_bearer = HTTPBearer(auto_error=False, description="an API key or a JWT")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


async def get_tenant(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> str:
    """The caller's tenant: "default" with no authentication configured, else from the API key
    or JWT; 401 (audited) when credentials are missing or invalid, 429 for an address past its
    failed checks per minute."""
    authenticator: Authenticator = request.app.state.authenticator
    limiter = request.app.state.limiter
    address = request.client.host if request.client else "unknown"
    if authenticator.enabled and (wait := await limiter.auth_wait(address)) > 0:
        audit.rate_limited(request, None, "auth_failures_per_minute", wait)
        raise RateLimited(
            "too many failed credential checks from this address",
            retry_after_s=wait,
            code="auth_failures",
        )
    try:
        principal = authenticator.authenticate(bearer.credentials if bearer else None, api_key)
    except AuthError as exc:
        audit.auth_failed(request, exc.reason, exc.method)
        await limiter.auth_failed(address)
        raise Unauthorized("missing or invalid credentials") from None
    request.state.tenant = principal.tenant
    return principal.tenant


KeelDep = Annotated[Keel, Depends(get_keel)]
TenantDep = Annotated[str, Depends(get_tenant)]
ThreadIdPath = Annotated[str, Path(pattern=THREAD_ID_PATTERN, description="a thread id")]
