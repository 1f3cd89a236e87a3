"""Turning a graph run into the events of DESIGN.md's streaming contract."""

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from graph.builder import NODES
from graph.context import Context
from integrations import metrics
from runtime.agent_events import ModeEvents


def node_summary(node: str, update: dict[str, Any]) -> dict[str, Any]:
    """What `node.finished` says about a node, from the node's state update."""
    if node == "guard":
        verdict = update.get("guard", {})
        return {k: verdict.get(k) for k in ("redactions", "blocked", "reason", "injection")}
    if node == "cache_lookup":
        return dict(update.get("cache", {}))
    if node in ("retrieve", "rerank"):
        passages = update.get("passages")
        if passages is None:
            return {"skipped": True}
        key = "passages" if node == "retrieve" else "order"
        return {key: [{"id": p["id"], "score": p["score"]} for p in passages]}
    guarded = {
        "injected_passages": update.get("injected_passages", []),
        "output_redactions": update.get("output_redactions", {}),
    }
    if node == "generate":
        usage = update.get("usage", {})
        return {
            "model": update.get("model"),
            "tokens_in": usage.get("input_tokens", 0),
            "tokens_out": usage.get("output_tokens", 0),
            "answered": bool(update.get("answer")),
            **guarded,
        }
    if node == "fallback":
        return {**(update.get("fallback") or {}), **guarded}
    return {}


async def graph_events(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    graph_input: dict[str, Any] | Command | None,
    config: RunnableConfig,
    context: Context,
    durability: Literal["sync", "async", "exit"],
    stream_modes: Sequence[str] = (),
    interrupt_before: list[str] | None = None,
    interrupt_after: list[str] | None = None,
    subgraphs: bool = False,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """`node.started`, `node.finished` and `token` events of one graph run, as (name, data),
    and the Agent Server stream-mode events of `stream_modes` (see `runtime.agent_events`),
    with those of subgraphs when `subgraphs`; the run stops before `interrupt_before` and after
    `interrupt_after` nodes."""
    modes = ModeEvents(str((config.get("metadata") or {}).get("run_id")), stream_modes)
    started: dict[str, tuple[int, float]] = {}
    step = 0
    for event in modes.start(graph_input):
        yield event
    async for part in graph.astream(
        graph_input,
        config,
        context=context,
        stream_mode=["tasks", "custom", *modes.graph_modes()],
        version="v2",
        durability=durability,
        interrupt_before=interrupt_before,
        interrupt_after=interrupt_after,
        subgraphs=subgraphs,
    ):
        for event in modes.part(part):  # type: ignore[arg-type]
            yield event
        if part["ns"]:  # keel's own events describe the graph's nodes, not a subgraph's
            continue
        data: dict[str, Any] = part["data"]  # type: ignore[assignment]
        if part["type"] == "custom":
            if "token" not in data:  # a node's progress (custom mode only): node.finished says it
                continue
            # An extractive sentence carries the citation it adds to the answer; the first token
            # of an answer replacing the text streamed so far carries `replace`.
            extra: dict[str, Any] = {k: data[k] for k in ("citation", "replace") if k in data}
            yield "token", {"text": data["token"], "node": data["node"], **extra}
            for event in modes.token(data["node"], data["token"], data.get("replace", False)):
                yield event
            continue
        if part["type"] != "tasks":
            continue
        name = data["name"]
        if name not in NODES:  # error-handler tasks are reported on the failed node
            continue
        if "input" in data:
            step += 1
            started[data["id"]] = (step, time.perf_counter())
            yield "node.started", {"node": name, "step": step}
            continue
        node_step, t0 = started.pop(data["id"], (step, time.perf_counter()))
        finished: dict[str, Any] = {
            "node": name,
            "step": node_step,
            "duration_ms": round((time.perf_counter() - t0) * 1000, 2),
        }
        if data.get("error") is not None:
            finished["error"] = f"{type(data['error']).__name__}: {data['error']}"
            finished["summary"] = {}
        else:
            finished["summary"] = node_summary(name, data.get("result") or {})
        metrics.NODE_DURATION.labels(name).observe(finished["duration_ms"] / 1000)
        if name == "cache_lookup" and "hit" in finished["summary"]:
            hit = finished["summary"]
            result = "hit" if hit["hit"] else "miss"
            metrics.CACHE_LOOKUPS.labels(result, hit.get("kind") or "none").inc()
        if name == "guard" and finished["summary"].get("blocked"):
            metrics.GUARD_BLOCKS.labels(finished["summary"].get("reason") or "unknown").inc()
        yield "node.finished", finished
    for event in modes.end():
        yield event
