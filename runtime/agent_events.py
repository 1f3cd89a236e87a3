"""Stream-mode events for runs started through the Agent Server API.

A run that asks for stream modes (values, updates, messages-tuple, messages, custom, debug, tasks,
checkpoints, events) records each mode's parts in its durable event log, beside keel's own events,
as `lg:<event>` events whose data is `{"ns": [...], "data": <JSON>}`; the frame's name is the
event's, with `|<namespace>` appended inside a subgraph. Runs that ask for none (all /v1 runs)
record nothing more."""

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Final, cast

from langgraph.types import StreamMode
from pydantic import BaseModel

PREFIX: Final = "lg:"
# Modes the graph streams itself. The token modes are built from keel's (redacted) token events,
# never from the raw LLM stream, so output redaction holds.
GRAPH_MODES: Final = ("values", "updates", "custom", "debug", "tasks", "checkpoints")
TOKEN_MODE: Final = "messages-tuple"  # [chunk, metadata] per token
MESSAGES_MODE: Final = "messages"  # messages/metadata, messages/partial, messages/complete
EVENTS_MODE: Final = "events"  # astream_events (v2) style: on_chain_start, on_chat_model_stream...
STREAM_MODES: Final = (*GRAPH_MODES, TOKEN_MODE, MESSAGES_MODE, EVENTS_MODE)
GRAPH_NAME: Final = "keel"
CHAT_MODEL_NAME: Final = "keel_chat_model"  # the events mode's name for the answering model

Event = tuple[str, dict[str, Any]]


def to_json(value: Any) -> Any:
    """`value` as plain JSON: messages and models dumped, dataclasses as dicts, the rest as text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, BaseModel):
        return to_json(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return str(value)


def _event(name: str, data: Any, ns: Sequence[str] = ()) -> Event:
    return PREFIX + name, {"ns": list(ns), "data": data}


class ModeEvents:
    """The stream-mode log events of one run, built from its graph parts and keel's tokens."""

    def __init__(self, run_id: str, stream_modes: Sequence[str]):
        self.run_id, self.modes = run_id, frozenset(stream_modes)
        self._text: dict[str, str] = {}  # node -> its streamed answer so far
        self._tasks: dict[str, tuple[str, int, Any]] = {}  # task id -> node, step, input
        self._task_of: dict[str, str] = {}  # node -> its running task id
        self._step = 0
        self._values: Any = None
        # (metadata, message, whether tokens carried it) to complete
        self._answers: list[tuple[dict[str, Any], Any, bool]] = []

    def graph_modes(self) -> list[StreamMode]:
        """The LangGraph stream modes the run must ask the graph for (beyond keel's own)."""
        # The events mode ends with the final values; the messages mode completes messages on them.
        needs_values = self.modes & {EVENTS_MODE, MESSAGES_MODE}
        wanted = set(self.modes) | ({"values"} if needs_values else set())
        return [cast(StreamMode, m) for m in GRAPH_MODES if m in wanted]

    def start(self, graph_input: Any) -> Iterator[Event]:
        """Before the graph runs: the root chain's start (events)."""
        if EVENTS_MODE in self.modes:
            start = {"input": to_json(graph_input)}
            yield self._chain("on_chain_start", GRAPH_NAME, self.run_id, [], start)

    def part(self, part: dict[str, Any]) -> Iterator[Event]:
        """The events of one `astream(..., version="v2")` part."""
        kind, ns, data = part["type"], part["ns"], part["data"]
        if kind == "values" and not ns:
            yield from self._complete()
            self._values = data
        if kind in self.modes:
            yield _event(kind, to_json(data), ns)
        if kind == "tasks" and not ns and self.modes & {EVENTS_MODE, MESSAGES_MODE, TOKEN_MODE}:
            yield from self._task(data)

    def token(self, node: str, text: str, replace: bool = False) -> Iterator[Event]:
        """The events of one token keel streamed from `node`; `replace` starts the message's
        text anew (`messages/partial` carries the whole text, so it drops what came before)."""
        if not self.modes & {TOKEN_MODE, MESSAGES_MODE, EVENTS_MODE}:
            return  # a /v1 run: its own `token` events say it all
        message_id = f"run-{self.run_id}-{node}"
        first = node not in self._text
        self._text[node] = ("" if replace else self._text.get(node, "")) + text
        metadata = {"run_id": self.run_id, "langgraph_node": node}
        chunk = {"type": "AIMessageChunk", "id": message_id, "content": text}
        if TOKEN_MODE in self.modes:
            yield _event("messages", [chunk, metadata])
        if MESSAGES_MODE in self.modes:
            if first:
                yield _event("messages/metadata", {message_id: {"metadata": metadata}})
            whole = {**chunk, "content": self._text[node]}
            yield _event("messages/partial", [whole])
        if EVENTS_MODE in self.modes:
            parents = [self.run_id, self._task_of.get(node, self.run_id)]
            if first:
                yield self._model("on_chat_model_start", node, parents, {"input": {}})
            yield self._model("on_chat_model_stream", node, parents, {"chunk": chunk})

    def end(self) -> Iterator[Event]:
        """After the graph has run to its end (or a breakpoint): the root chain's end (events)."""
        yield from self._complete()
        if EVENTS_MODE in self.modes:
            output = to_json(self._values)
            yield self._chain("on_chain_end", GRAPH_NAME, self.run_id, [], {"output": output})

    def _task(self, data: dict[str, Any]) -> Iterator[Event]:
        task_id, node = data["id"], data["name"]
        if "input" in data:  # a task starts
            self._step += 1
            task_input = to_json(data["input"]) if EVENTS_MODE in self.modes else None
            self._tasks[task_id] = (node, self._step, task_input)
            self._task_of[node] = task_id
            if EVENTS_MODE in self.modes:
                start = {"input": self._tasks[task_id][2]}
                yield self._chain("on_chain_start", node, task_id, [self.run_id], start, self._step)
            return
        node, step, task_input = self._tasks.pop(task_id, (node, self._step, None))
        result = None if data.get("error") is not None else to_json(data.get("result") or {})
        if EVENTS_MODE in self.modes:
            yield from self._task_end(node, task_id, step, task_input, result)
        if self.modes & {MESSAGES_MODE, TOKEN_MODE} and result is not None:
            metadata = {"run_id": self.run_id, "langgraph_node": node, "langgraph_step": step}
            written = (data.get("result") or {}).get("messages") or []
            answers = [m for m in written if getattr(m, "type", None) == "ai"]
            self._answers += [(metadata, m, node in self._text) for m in answers]

    def _complete(self) -> Iterator[Event]:
        """The AI messages nodes wrote, once the step's reducers gave them their ids; in
        messages-tuple, only those no token carried (a cache hit, a refusal), as LangGraph
        sends a message a node returns without streaming it."""
        for metadata, message, streamed in self._answers:
            whole = to_json(message)
            if MESSAGES_MODE in self.modes:
                yield _event("messages/metadata", {whole["id"]: {"metadata": metadata}})
                yield _event("messages/complete", [whole])
            if TOKEN_MODE in self.modes and not streamed:
                yield _event("messages", [whole, metadata])
        self._answers = []

    def _task_end(
        self, node: str, task_id: str, step: int, task_input: Any, result: Any
    ) -> Iterator[Event]:
        parents = [self.run_id]
        if node in self._text and self._task_of.get(node) == task_id:
            message = {"type": "AIMessageChunk", "id": f"run-{self.run_id}-{node}"}
            output = {"output": {**message, "content": self._text[node]}}
            yield self._model("on_chat_model_end", node, [*parents, task_id], output)
        if result is not None:
            chunk = {"chunk": result}
            yield self._chain("on_chain_stream", node, task_id, parents, chunk, step)
        end = {"output": result, "input": task_input}
        yield self._chain("on_chain_end", node, task_id, parents, end, step)

    def _chain(
        self,
        kind: str,
        name: str,
        run_id: str,
        parents: list[str],
        data: dict[str, Any],
        step: int | None = None,
    ) -> Event:
        """A chain event: the graph's (no step) or a node's."""
        metadata: dict[str, Any] = {"run_id": self.run_id}
        tags: list[str] = []
        if step is not None:
            tags = [f"graph:step:{step}"]
            metadata |= {
                "langgraph_node": name,
                "langgraph_step": step,
                "langgraph_path": ["__pregel_pull", name],
                "langgraph_checkpoint_ns": f"{name}:{run_id}",
            }
        frame = {"event": kind, "name": name, "run_id": run_id, "tags": tags}
        return _event(
            "events", {**frame, "metadata": metadata, "parent_ids": parents, "data": data}
        )

    def _model(self, kind: str, node: str, parents: list[str], data: dict[str, Any]) -> Event:
        metadata = {"run_id": self.run_id, "langgraph_node": node}
        frame = {"event": kind, "name": CHAT_MODEL_NAME, "run_id": f"run-{self.run_id}-{node}"}
        return _event(
            "events",
            {**frame, "tags": [], "metadata": metadata, "parent_ids": parents, "data": data},
        )
