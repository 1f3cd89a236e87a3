"""The wiring: node names, routing functions and `build_graph(deps)`.

START -> guard -(blocked)-> END
           `-> cache_lookup -(hit)-> END
                 `-> retrieve -(no passages / store down)-> fallback -> END
                       `-> rerank (skipped, degraded, on timeout or error)
                             `-> generate -(error / timeout)-> fallback -> END
"""

from typing import Any, Final, Literal

from langgraph.errors import NodeError
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, Command

from graph.context import Context
from graph.deps import Deps
from graph.state import InputState, OutputState, State
from integrations.tracing import traced_node
from nodes.cache import make_cache_lookup
from nodes.fallback import make_fallback
from nodes.generate import make_generate
from nodes.guard import make_guard
from nodes.rerank import make_rerank
from nodes.retrieve import make_retrieve

GUARD: Final = "guard"
CACHE: Final = "cache_lookup"
RETRIEVE: Final = "retrieve"
RERANK: Final = "rerank"
GENERATE: Final = "generate"
FALLBACK: Final = "fallback"
FINISH: Final = "__end__"  # langgraph's END, as a Literal for the routing functions' types
NODES = (GUARD, CACHE, RETRIEVE, RERANK, GENERATE, FALLBACK)
ERROR_HANDLER: Final = "__error_handler__{}"  # the node LangGraph adds for a node's handler


# Routing functions and error handlers are `async` only so that langgraph runs them on the event
# loop: it hands a plain function to a worker thread, one thread hop per edge taken.


async def route_after_guard(state: State) -> Literal["cache_lookup", "__end__"]:
    """A blocked message ends the run: no retrieval, no LLM call."""
    return FINISH if state["guard"]["blocked"] else CACHE


async def route_after_cache(state: State) -> Literal["retrieve", "__end__"]:
    """A cache hit ends the run."""
    return FINISH if state["cache"]["hit"] else RETRIEVE


async def route_after_retrieve(state: State) -> Literal["rerank", "fallback"]:
    """Nothing retrieved goes straight to the fallback."""
    return RERANK if state.get("passages") else FALLBACK


ServiceLevel = Literal["full", "no_rerank", "cached", "documents_only"]


def service_level(state: State) -> ServiceLevel:
    """The rung of the degradation ladder that answered: full, no rerank (rerank over budget),
    cached (a near question's answer while the LLM is down), documents only (LLM down, breaker
    open, deadline, or a generated answer the grounding check replaced). Retrieval down fails the run. An ordinary cache hit is a full answer: it
    is what the full graph answered, and counting it degraded would page on a healthy cache."""
    mode = (state.get("fallback") or {}).get("mode")
    if mode == "cached":
        return "cached"
    degraded = state.get("degraded", [])
    # "Not found" with nothing failed (nothing retrieved) is what the full graph answers; a
    # generated answer the grounding check replaced is answered from the documents only.
    if mode == "extractive" or (mode == "not_found" and degraded):
        return "documents_only"
    if any(reason.startswith("ungrounded_answer") for reason in degraded):
        return "documents_only"
    if any(reason.startswith("rerank_skipped") for reason in degraded):
        return "no_rerank"
    return "full"


def _failure(node: str, error: BaseException) -> str:
    return f"{node}: {type(error).__name__}: {error}"


async def _on_retrieve_error(state: State, error: NodeError) -> Command[Literal["fallback"]]:
    return Command(
        goto=FALLBACK,
        update={
            "passages": [],
            "degraded": [*state.get("degraded", []), _failure(RETRIEVE, error.error)],
        },
    )


async def _on_rerank_error(state: State, error: NodeError) -> Command[Literal["generate"]]:
    # The first-stage order stands; the answer is still grounded, only less well ranked.
    return Command(
        goto=GENERATE,
        update={
            "degraded": [*state.get("degraded", []), _failure("rerank_skipped", error.error)],
        },
    )


async def _on_generate_error(state: State, error: NodeError) -> Command[Literal["fallback"]]:
    # What the client already saw goes along, so the fallback continues it instead of repeating.
    return Command(
        goto=FALLBACK,
        update={
            "degraded": [*state.get("degraded", []), _failure(GENERATE, error.error)],
            "partial_answer": getattr(error.error, "partial", ""),
        },
    )


def _add_handled(
    builder: StateGraph[Any, Any, Any, Any],
    name: str,
    node: Any,
    on_error: Any,
    goto: str,
    timeout: float | None = None,
) -> None:
    """Adds `node` with LangGraph's error handler `on_error` (which goes to `goto`), and the two
    edges of that handler LangGraph does not draw, so Studio shows where a failure goes."""
    handler = ERROR_HANDLER.format(name)
    # langgraph's add_node overloads do not yet type `(state, NodeError)` error handlers.
    builder.add_node(  # type: ignore[call-overload]
        name,
        traced_node(name, node),
        timeout=timeout,
        error_handler=on_error,
        destinations={handler: "error"},  # drawing only: the error goes to the handler
    )
    builder.nodes[handler].ends = (goto,)


def build_graph(
    deps: Deps, checkpointer: Checkpointer = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compiles keel's state machine over `deps`; the server passes its checkpointer here."""
    settings = deps.settings
    builder = StateGraph(
        State, context_schema=Context, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node(GUARD, traced_node(GUARD, make_guard(deps)))
    builder.add_node(CACHE, traced_node(CACHE, make_cache_lookup(deps)))
    _add_handled(builder, RETRIEVE, make_retrieve(deps), _on_retrieve_error, FALLBACK)
    _add_handled(
        builder,
        RERANK,
        make_rerank(deps),
        _on_rerank_error,
        GENERATE,
        timeout=settings.rerank_timeout_s,
    )
    _add_handled(
        builder,
        GENERATE,
        make_generate(deps),
        _on_generate_error,
        FALLBACK,
        timeout=settings.run_deadline_s,  # a safety net: LLMChain enforces the run's deadline
    )
    builder.add_node(FALLBACK, traced_node(FALLBACK, make_fallback(deps)))
    builder.add_edge(START, GUARD)
    builder.add_conditional_edges(GUARD, route_after_guard)
    builder.add_conditional_edges(CACHE, route_after_cache)
    builder.add_conditional_edges(RETRIEVE, route_after_retrieve)
    builder.add_edge(RERANK, GENERATE)
    builder.add_edge(GENERATE, END)
    builder.add_edge(FALLBACK, END)
    return builder.compile(checkpointer=checkpointer, name="keel")
