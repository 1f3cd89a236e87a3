"""The Agent Server API across two replicas on one Postgres, through the official Python client:
a run started on one replica joined by its last event id on the other, and cancelled with
rollback from the other."""

import psycopg
from langgraph_sdk import get_client

from tests.integration.test_runs import replicas  # noqa: F401 (the two-replica fixture)

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
INPUT = {"messages": [{"role": "user", "content": QUESTION}]}
FRESH = {"use_cache": False}


def _frames(parts: list) -> list[tuple[str, str, object]]:
    return [(p.id, p.event, p.data) for p in parts]


async def test_across_replicas(replicas, postgres_url: str) -> None:  # noqa: F811
    """One test: two replicas take a while to start."""
    a, b = (get_client(url=server.url) for server in replicas)
    await _join_stream_on_the_other_replica_after_a_last_event_id(a, b)
    await _cancel_with_rollback_from_the_other_replica(a, b, postgres_url)


async def _join_stream_on_the_other_replica_after_a_last_event_id(a, b) -> None:
    thread_id = (await a.threads.create())["thread_id"]
    modes = ["updates", "messages-tuple", "values"]
    for cut in (1, 4, 20):  # in the updates, in the tokens
        seen = []
        async for part in a.runs.stream(
            thread_id, "keel", input=INPUT, stream_mode=modes, context=FRESH
        ):
            seen.append(part)
            if len(seen) == cut + 1:
                break  # the client drops its connection on A; the run goes on there
        run_id = seen[0].data["run_id"]
        rest = [p async for p in b.runs.join_stream(thread_id, run_id, last_event_id=seen[-1].id)]
        whole = [p async for p in b.runs.join_stream(thread_id, run_id)]
        assert _frames(seen) + _frames(rest) == _frames(whole), cut
        seqs = [int(p.id.rsplit(":", 1)[1]) for p in whole]
        assert seqs == sorted(set(seqs))
        assert sum(1 for p in whole if p.event == "messages") == 40
        assert (await b.runs.get(thread_id, run_id))["status"] == "success"


async def _cancel_with_rollback_from_the_other_replica(a, b, postgres_url: str) -> None:
    thread_id = (await a.threads.create())["thread_id"]
    await a.runs.wait(thread_id, "keel", input=INPUT)
    before = await b.threads.get_state(thread_id)
    run = await a.runs.create(
        thread_id, "keel", input=INPUT, stream_mode="messages-tuple", context=FRESH
    )
    async for part in a.runs.join_stream(thread_id, run["run_id"]):
        if part.event == "messages":
            break  # generating on A: its first checkpoints are written
    with psycopg.connect(postgres_url) as conn:
        written = conn.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id = %s AND metadata->>'run_id' = %s",
            (thread_id, run["run_id"]),
        ).fetchone()
    assert written is not None and written[0] > 0

    await b.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")
    assert (await a.runs.get(thread_id, run["run_id"]))["status"] == "interrupted"
    frames = [p async for p in b.runs.join_stream(thread_id, run["run_id"])]
    assert frames[-1].event == "error" and frames[-1].data["error"] == "cancelled"
    assert sum(1 for p in frames if p.event == "messages") < 40
    after = await a.threads.get_state(thread_id)
    assert after["checkpoint"] == before["checkpoint"] and after["values"] == before["values"]
    with psycopg.connect(postgres_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id = %s AND metadata->>'run_id' = %s",
            (thread_id, run["run_id"]),
        ).fetchone()
    assert left == (0,)
    # The thread takes the next turn at once, on either replica.
    values = await b.runs.wait(thread_id, "keel", input=INPUT, context=FRESH)
    assert len(values["messages"]) == 4
