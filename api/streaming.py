"""Runs a turn through the compiled graph and turns it into the SSE events of DESIGN.md."""

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig

from api.deps import Keel
from api.schemas import RunRequest
from graph.builder import NODES
from graph.context import Context
from graph.errors import InvalidInput, KeelError


@dataclass
class Event:
    """One SSE event: its name and JSON data; the id is `<run_id>:<seq>`."""

    event: str
    data: dict[str, Any]
    id: str = ""


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
    if node == "generate":
        usage = update.get("usage", {})
        return {
            "model": update.get("model"),
            "tokens_in": usage.get("input_tokens", 0),
            "tokens_out": usage.get("output_tokens", 0),
            "answered": bool(update.get("answer")),
        }
    if node == "fallback":
        return dict(update.get("fallback") or {})
    return {}


@dataclass
class TurnRun:
    """One turn of a thread: validated input, ids, and the event sequence counter."""

    keel: Keel
    tenant: str
    thread_id: str
    request: RunRequest
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    context: Context = field(init=False)

    def __post_init__(self) -> None:
        # Validate before any byte is streamed, so bad input gets a plain 4xx response.
        self.context = self._context()

    def _event(self, name: str, data: dict[str, Any]) -> Event:
        self.seq += 1
        return Event(name, data, f"{self.run_id}:{self.seq}")

    def _context(self) -> Context:
        message = self.request.message
        if len(message) > self.keel.settings.max_message_chars:
            raise InvalidInput(
                f"message longer than {self.keel.settings.max_message_chars} characters"
            )
        if not message.strip():
            raise InvalidInput("message is empty")
        knobs = self.request.context
        return Context(
            tenant=self.tenant,
            user_message=message,
            top_k=knobs.top_k,
            candidates=knobs.candidates,
            use_cache=knobs.use_cache,
            rerank=knobs.rerank,
            model=knobs.model,
        )

    async def events(self) -> AsyncIterator[Event]:
        """Streams the run as events; failures end the stream with `run.error`."""
        config: RunnableConfig = {
            "configurable": {"thread_id": self.thread_id},
            "metadata": {"run_id": self.run_id, "tenant": self.tenant},
            "run_id": uuid.UUID(self.run_id),
        }
        graph = self.keel.graph
        before = await graph.aget_state(config)
        yield self._event(
            "run.started",
            {
                "run_id": self.run_id,
                "thread_id": self.thread_id,
                "checkpoint_id": before.config.get("configurable", {}).get("checkpoint_id"),
            },
        )
        started: dict[str, tuple[int, float]] = {}
        step = 0
        try:
            async for part in graph.astream(
                {"messages": []},
                config,
                context=self.context,
                stream_mode=["tasks", "custom"],
                version="v2",
                durability=self.request.durability or self.keel.settings.durability,
            ):
                data: dict[str, Any] = part["data"]  # type: ignore[assignment]
                if part["type"] == "custom":
                    yield self._event("token", {"text": data["token"], "node": data["node"]})
                    continue
                name = data["name"]
                if name not in NODES:  # error-handler tasks are reported on the failed node
                    continue
                if "input" in data:
                    step += 1
                    started[data["id"]] = (step, time.perf_counter())
                    yield self._event("node.started", {"node": name, "step": step})
                else:
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
                    yield self._event("node.finished", finished)
            final = (await graph.aget_state(config)).values
        except KeelError as exc:
            yield self._event(
                "run.error", {"code": exc.code, "message": str(exc), "retryable": exc.retryable}
            )
            return
        except Exception as exc:
            yield self._event(
                "run.error",
                {
                    "code": "internal_error",
                    "message": type(exc).__name__,
                    "retryable": False,
                },
            )
            return
        yield self._event(
            "run.finished",
            {
                "run_id": self.run_id,
                "thread_id": self.thread_id,
                "answer": final.get("answer", ""),
                "citations": final.get("citations", []),
                "cached": final.get("cached", False),
                "degraded": final.get("degraded", []),
                "usage": final.get("usage", {"input_tokens": 0, "output_tokens": 0}),
                "model": final.get("model"),
            },
        )
