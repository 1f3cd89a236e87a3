"""A finished run's answer as the agent protocols (MCP, A2A) hand it back: its text with the
sources it cites, and the structured fields beside it."""

from typing import Any

from checkpoints.runs import Run


def answer_text(result: dict[str, Any]) -> str:
    """The answer, then its sources as `[n] source > section`."""
    lines = [result["answer"]]
    if result["citations"]:
        lines.append("\nSources:")
        for c in result["citations"]:
            where = f"{c['source']} > {c['section']}" if c.get("section") else c["source"]
            lines.append(f"[{c['n']}] {where}")
    return "\n".join(lines)


def answer_fields(run: Run, result: dict[str, Any]) -> dict[str, Any]:
    """The answer, its citations, where it ran (thread, run, assistant) and how well."""
    return {
        "answer": result["answer"],
        "citations": result["citations"],
        "thread_id": run.thread_id,
        "run_id": run.run_id,
        "assistant_id": run.request.get("assistant_id"),
        "service_level": result["service_level"],
        "degraded": result["degraded"],
        "cached": result["cached"],
        "found": result["found"],
    }
