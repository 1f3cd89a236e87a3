"""How an Agent Server run enters the graph beyond "answer this message": a `command` (resume,
update, goto), a fork from an earlier checkpoint (time travel), and breakpoints to stop at.

A run that names none of these is a plain turn (what every /v1 run is)."""

from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command


class RunControl(TypedDict, total=False):
    """The parts of a run's request (stored in its row) that steer the graph."""

    command: dict[str, Any]  # {"resume": ..., "update": {...}, "goto": [node, ...]}, all optional
    checkpoint_id: str  # start from this checkpoint of the thread: a new branch of its history
    interrupt_before: list[str]  # stop before these nodes (the thread is then `interrupted`)
    interrupt_after: list[str]  # stop after these nodes


def graph_input(control: RunControl, has_message: bool) -> dict[str, Any] | Command | None:
    """The graph's input: a command as it says; a new message starts a turn (the guard reads it
    from the run's context); neither continues the thread where it stopped (a breakpoint), or
    replays it from the fork checkpoint."""
    command = control.get("command")
    if command is not None:
        return Command(
            resume=command.get("resume"),
            update=command.get("update"),
            goto=command.get("goto") or (),
        )
    return {"messages": []} if has_message else None


def graph_config(config: RunnableConfig, control: RunControl) -> RunnableConfig:
    """`config`, starting from the run's fork checkpoint when it names one."""
    checkpoint_id = control.get("checkpoint_id")
    if checkpoint_id is None:
        return config
    configurable = {**config.get("configurable", {}), "checkpoint_id": checkpoint_id}
    return {**config, "configurable": configurable}
