"""FastAPI dependencies: the application's long-lived objects and the caller's tenant."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Path, Request
from langgraph.graph.state import CompiledStateGraph

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


def get_tenant() -> str:
    """The caller's tenant. Single-tenant until authentication is configured."""
    return "default"


KeelDep = Annotated[Keel, Depends(get_keel)]
TenantDep = Annotated[str, Depends(get_tenant)]
ThreadIdPath = Annotated[str, Path(pattern=THREAD_ID_PATTERN, description="a thread id")]
