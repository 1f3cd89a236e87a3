"""What MCP and A2A make of keel's records: tool names from assistant names, the tools' input
schema, and a task's state and artifact from its run row."""

import json

import pytest
from jsonschema import Draft202012Validator, ValidationError

from api.agent.a2a import task_body
from api.agent.mcp import input_schema, tool_names
from checkpoints.runs import Run

RESULT = {
    "answer": "Unchanged files are skipped. [1]",
    "citations": [{"n": 1, "id": "ingestion.txt#0", "source": "ingestion.txt", "snippet": "s"}],
    "service_level": "full",
    "degraded": [],
    "cached": False,
    "found": True,
}


def _assistant(name: str, assistant_id: str) -> dict:
    return {"name": name, "assistant_id": assistant_id}


def test_tool_names_are_safe_and_unique() -> None:
    tools = tool_names(
        [
            _assistant("keel", "default-id"),
            _assistant("Short answers!", "11111111-aaaa"),
            _assistant("Short answers?", "22222222-bbbb"),
            _assistant("keel", "33333333-cccc"),
            _assistant("***", "44444444-dddd"),
        ]
    )
    assert {n: a["assistant_id"] for n, a in tools.items()} == {
        "keel": "default-id",
        "Short_answers": "11111111-aaaa",
        "Short_answers_22222222": "22222222-bbbb",
        "keel_33333333": "33333333-cccc",
        "assistant_44444444": "44444444-dddd",
    }


def test_the_input_schema_takes_a_question_and_an_optional_thread() -> None:
    validator = Draft202012Validator(input_schema(100))
    validator.validate({"question": "why?"})
    validator.validate({"question": "why?", "thread_id": "t-1_x"})
    for bad in (
        {},
        {"question": ""},
        {"question": "x" * 101},
        {"question": "x", "thread_id": "a/b"},
    ):
        with pytest.raises(ValidationError):
            validator.validate(bad)
    with pytest.raises(ValidationError):
        validator.validate({"question": "x", "other": 1})


def _run(status: str, result: dict | None = None, error: str | None = None) -> Run:
    row = {
        "run_id": "run-2",
        "thread_id": "thread-1",
        "tenant": "t",
        "status": status,
        "strategy": "reject",
        "request": json.dumps({"assistant_id": "keel"}),
        "result": json.dumps(result) if result else None,
        "error": error,
        "cancel": None,
        "start_checkpoint_id": None,
        "lease_owner": None,
        "attempts": 1,
        "events_pruned": False,
        "created_at": 1.0,
        "updated_at": 2.0,
    }
    return Run.from_row(row)


@pytest.mark.parametrize(
    ("status", "result", "state"),
    [
        ("pending", None, "submitted"),
        ("running", None, "working"),
        ("succeeded", RESULT, "completed"),
        ("failed", None, "failed"),
        ("cancelled", None, "canceled"),
        ("interrupted", RESULT, "input-required"),  # stopped at a breakpoint
        ("interrupted", None, "failed"),  # its replica kept dying
    ],
)
def test_a_task_takes_its_state_from_its_latest_run(
    status: str, result: dict | None, state: str
) -> None:
    task = task_body("run-1", _run(status, result, "boom" if state == "failed" else None))
    assert task["id"] == "run-1" and task["contextId"] == "thread-1"
    assert task["status"]["state"] == state
    assert task["metadata"] == {"run_id": "run-2", "assistant_id": "keel"}
    assert bool(task["artifacts"]) is (state == "completed")
    if state == "completed":
        text, data = task["artifacts"][0]["parts"]
        assert text["text"] == "Unchanged files are skipped. [1]\n\nSources:\n[1] ingestion.txt"
        assert data["data"]["run_id"] == "run-2" and data["data"]["citations"]
    if state in ("failed", "input-required"):
        assert task["status"]["message"]["role"] == "agent"
