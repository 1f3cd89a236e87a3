"""keel's Postgres saver (`checkpoints.postgres`) stores exactly what LangGraph's does: the same
graph run through both (a breakpoint, a resume, a failing node) leaves the same history and the
same rows, and concurrent runs checkpoint side by side on the pool."""

import asyncio
import operator
import uuid
from typing import Annotated, Any

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from typing_extensions import TypedDict

from checkpoints.postgres import PostgresSaver


class State(TypedDict, total=False):
    question: str
    notes: Annotated[list[dict[str, Any]], operator.add]
    answer: str
    fail: bool


def build(saver: AsyncPostgresSaver):  # type: ignore[no-untyped-def]
    def plan(state: State) -> State:
        return {"notes": [{"step": "plan", "q": state["question"]}]}

    def look(state: State) -> State:
        return {"notes": [{"step": "look", "n": len(state["notes"])}], "answer": "draft"}

    def write(state: State) -> State:
        if state.get("fail"):
            raise ValueError("the writer failed")
        return {"answer": state["answer"] + " + final", "notes": [{"step": "write"}]}

    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("look", look)
    graph.add_node("write", write)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "look")
    graph.add_edge("look", "write")
    graph.add_edge("write", END)
    return graph.compile(checkpointer=saver, interrupt_before=["write"])


async def run(saver: AsyncPostgresSaver, conn: AsyncConnection, fail: bool) -> dict[str, Any]:
    graph, thread = build(saver), uuid.uuid4().hex
    config = {"configurable": {"thread_id": thread}}
    await graph.ainvoke({"question": "how tall?", "notes": [], "fail": fail}, config)
    try:
        await graph.ainvoke(None, config)  # past the breakpoint
    except ValueError:
        assert fail
    history = [
        (s.values, s.next, s.metadata["step"], [(t.name, t.error is not None) for t in s.tasks])
        async for s in graph.aget_state_history(config)
    ]
    writes = await (
        await conn.execute(
            "SELECT task_path, idx, channel, type, blob FROM checkpoint_writes "
            "WHERE thread_id = %s ORDER BY channel, idx, blob",
            (thread,),
        )
    ).fetchall()
    blobs = await (
        await conn.execute(
            # a version is a counter plus a random fraction: compare the counters
            "SELECT channel, split_part(version, '.', 1) AS version, type, blob "
            "FROM checkpoint_blobs "
            "WHERE thread_id = %s ORDER BY channel, version",
            (thread,),
        )
    ).fetchall()
    count = await (
        await conn.execute("SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s", (thread,))
    ).fetchone()
    return {"history": history, "writes": writes, "blobs": blobs, "checkpoints": count}


async def test_same_history_and_rows_as_langgraphs_saver(postgres_url: str) -> None:
    kwargs = {"autocommit": True, "prepare_threshold": None, "row_factory": dict_row}
    async with AsyncConnectionPool(postgres_url, kwargs=kwargs, open=False) as pool:
        await pool.open()
        stock, ours = AsyncPostgresSaver(pool), PostgresSaver(pool)
        await stock.setup()
        async with pool.connection() as conn:
            for fail in (False, True):
                expected, got = await run(stock, conn, fail), await run(ours, conn, fail)
                assert got == expected
                assert got["writes"] and got["blobs"] and got["checkpoints"]["n"] >= 4
            # the failing node's error is a pending write, as LangGraph records it
            assert any(w["channel"] == "__error__" for w in got["writes"])
            # Concurrent runs on one saver: each takes its own pooled connection.
            results = await asyncio.gather(*(run(ours, conn, False) for _ in range(8)))
        assert all(r["history"] == results[0]["history"] for r in results)
