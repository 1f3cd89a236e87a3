"""FastAPI dependencies: the application's long-lived objects and the caller's tenant."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from langgraph.graph.state import CompiledStateGraph

from api import audit
from api.auth import Authenticator, AuthError
from api.errors import Unauthorized
from api.schemas import THREAD_ID_PATTERN
from checkpoints import Persistence
from graph.deps import Deps
from graph.settings import Settings

if TYPE_CHECKING:
    from api.runner import RunManager


@dataclass
class Keel:
    """What the lifespan builds once: settings, clients, persistence and the compiled graph."""

    settings: Settings
    deps: Deps
    persistence: Persistence
    graph: CompiledStateGraph[Any, Any, Any, Any]
    runs: "RunManager" = field(init=False)


def get_keel(request: Request) -> Keel:
    """The application's `Keel`, built in the lifespan."""
    return request.app.state.keel


_bearer = HTTPBearer(auto_error=False, description="an API key or a JWT")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


def get_tenant(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> str:
    """The caller's tenant: "default" with no authentication configured, else from the API key
    or JWT; 401 (audited) when credentials are missing or invalid."""
    authenticator: Authenticator = request.app.state.authenticator
    try:
        principal = authenticator.authenticate(bearer.credentials if bearer else None, api_key)
    except AuthError as exc:
        audit.auth_failed(request, exc.reason, exc.method)
        raise Unauthorized("missing or invalid credentials") from None
    request.state.tenant = principal.tenant
    return principal.tenant


KeelDep = Annotated[Keel, Depends(get_keel)]
TenantDep = Annotated[str, Depends(get_tenant)]
ThreadIdPath = Annotated[str, Path(pattern=THREAD_ID_PATTERN, description="a thread id")]
