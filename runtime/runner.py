"""The run manager: runs execute as server-side tasks, not inside HTTP responses.

Every event is appended to the run's log in the database before anyone sees it; responses follow
the log, so a client can drop and reconnect (to any replica) without losing or repeating events.
Each replica claims runs under a lease it renews; a replica that dies stops renewing, and another
(or the same one, restarted) resumes the run from its last checkpoint.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.runnables import RunnableConfig

from checkpoints.retention import discard_after, keep_latest
from checkpoints.runs import TERMINAL_EVENTS, Run, Status
from checkpoints.threads import delete_thread, sweep_expired_threads, touch_thread
from graph.builder import service_level
from graph.context import Context
from graph.errors import InvalidInput, KeelError, NotFound
from graph.state import Citation
from integrations import metrics, tracing
from runtime import logs, webhooks
from runtime.agent_events import to_json
from runtime.agent_runs import run_body
from runtime.control import RunControl, graph_config, graph_input
from runtime.crons import fire_due_crons
from runtime.eventlog import EventWriter
from runtime.events import graph_events

if TYPE_CHECKING:
    from runtime.keel import Keel

log = logging.getLogger("keel.runs")
Event = tuple[int, str, dict[str, Any]]  # (sequence number, name, data)
POLL_S = 0.1
# Another replica takes a pending run only once it has waited this long: the submitting replica
# claims its own at once, so its streams read the run's events from memory, not by polling.
CLAIM_AFTER_S = 1.0
EVENT_BATCH = 500


class RunManager:
    """Submits, executes, cancels, resumes and follows runs for one replica."""

    def __init__(self, keel: "Keel"):
        self.keel = keel
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_kind: dict[str, str] = {}
        self._raw: dict[str, str] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        # Committed events of the runs executing here (this attempt), from their first sequence
        # number: followers on this replica read them from memory instead of the database.
        self._tails: dict[str, tuple[int, list[Event]]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.draining = False  # SIGTERM: claim nothing more, let running runs finish
        self.closed = False  # drained: streams end (clients reconnect to another replica)
        self._last_active = time.monotonic()

    def idle_s(self) -> float:
        """Seconds since this replica last ran a run (0 while one runs)."""
        return 0.0 if self._tasks else time.monotonic() - self._last_active

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.keel.persistence.runs

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Starts the maintenance loop (heartbeats, cancellations, resumes, retention)."""
        self._spawn(self._maintain())

    async def drain(self, timeout_s: float) -> int:
        """Stops claiming runs and waits up to `timeout_s` for this replica's running runs;
        then open streams end. Returns how many runs were still running (`stop` hands them
        back to another replica, from their last checkpoint)."""
        self.draining = True
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        self.closed = True
        for wakeup in self._wakeups.values():
            wakeup.set()
        return len(self._tasks)

    async def stop(self) -> None:
        """Hands this replica's running runs back (pending) so another replica resumes them."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in [*self._background, *tasks]:
            task.cancel()
        await asyncio.gather(*self._background, *tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _maintain(self) -> None:
        settings = self.keel.settings
        ticks, swept_at = 0, time.monotonic()
        while True:
            try:
                stops = await self.store.heartbeat(
                    self.owner, list(self._tasks), settings.run_lease_s
                )
                for run_id, kind in stops.items():
                    self._stop_local(run_id, kind)
                for run_id, status in await self.store.release_expired(settings.run_max_attempts):
                    log.warning("run %s lost its replica; now %s", run_id, status)
                    if status == "interrupted":
                        await self._append_terminal(
                            run_id,
                            "interrupted",
                            "the replica running it stopped too many times",
                            True,
                        )
                metrics.RUNS_PENDING.set(await self.store.count_pending())
                if not self.draining:
                    for thread_id in await self.store.claimable_threads(CLAIM_AFTER_S):
                        self._spawn(self._drain(thread_id))
                    await fire_due_crons(self.keel)
                if settings.retention_events_s and ticks % 30 == 0:
                    await self.store.prune_events(settings.retention_events_s)
                if settings.thread_ttl_sweep_s and (
                    time.monotonic() - swept_at >= settings.thread_ttl_sweep_s
                ):
                    swept_at = time.monotonic()
                    if swept := await sweep_expired_threads(self.keel.persistence):
                        log.info("swept %d expired threads", swept)
                    # The store's own TTL sweep deletes expired items, not their vectors.
                    await self.keel.persistence.vectors.drop_orphans()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("run maintenance failed; retrying")
            ticks += 1
            await asyncio.sleep(settings.run_heartbeat_s)

    # -- submitting -----------------------------------------------------------------------
    async def submit(
        self,
        tenant: str,
        thread_id: str,
        message: str | None,
        context: dict[str, Any],
        *,
        multitask_strategy: str | None = None,
        durability: str | None = None,
        stream_modes: list[str] | None = None,
        subgraphs: bool = False,
        metadata: dict[str, Any] | None = None,
        assistant_id: str | None = None,
        control: RunControl | None = None,
        webhook: str | None = None,
        on_completion: Literal["keep", "delete"] = "keep",
    ) -> Run:
        """Records a pending run (applying the multitask strategy) and starts it when it may.

        `context` holds the run's knobs (`graph.context.Context` fields a client may set);
        `stream_modes` the Agent Server stream modes its log records (`runtime.agent_events`),
        with subgraphs' when `subgraphs`;
        `control` how it enters the graph (`runtime.control`: no `message` and no command
        continues the thread where it stopped); `webhook` where its replica posts the run once
        it has ended (`runtime.webhooks`); `on_completion="delete"` deletes the thread then
        (a stateless background run's)."""
        settings = self.keel.settings
        self.check(message, context, webhook)
        strategy = multitask_strategy or settings.multitask_strategy
        # Only the redacted message is stored; the raw one stays in this process's memory.
        question = None if message is None else self.keel.deps.redactor.redact(message).text
        if question:  # cache_lookup and retrieve need its vector: embedded while the run starts
            self.keel.deps.corpora.start_query(question)
        stored: dict[str, Any] = {
            "message": question,
            "context": context,
            "durability": durability or settings.durability,
        }
        if stream_modes is not None:
            stored |= {"stream_modes": stream_modes, "metadata": metadata or {}}
            if subgraphs:
                stored["subgraphs"] = True
        if assistant_id is not None:
            stored["assistant_id"] = assistant_id
        if control:
            stored["control"] = control
        if webhook is not None:
            stored["webhook"] = webhooks.check_url(webhook, settings.webhook_allow_private)
        if on_completion == "delete":
            stored["on_completion"] = on_completion
        if trace_context := tracing.inject():  # the replica that runs it continues this trace
            stored["trace"] = trace_context
        run, stopped = await self.store.create(tenant, thread_id, strategy, stored, None)
        if message is not None:
            self._raw[run.run_id] = message
        for run_id in stopped:
            self._stop_local(run_id, "rollback" if strategy == "rollback" else "cancel")
        self._spawn(self._drain(thread_id))
        return run

    def check(self, message: str | None, context: dict[str, Any], webhook: str | None) -> None:
        """What `submit` refuses (`InvalidInput`), checked without submitting anything."""
        settings = self.keel.settings
        if message is not None and len(message) > settings.max_message_chars:
            raise InvalidInput(f"message longer than {settings.max_message_chars} characters")
        if message is not None and not message.strip():
            raise InvalidInput("message is empty")
        if not self.keel.deps.llm.allows(context.get("model")):
            raise InvalidInput(f"model {context.get('model')!r} is not allowed on this server")
        if webhook is not None:
            webhooks.check_url(webhook, settings.webhook_allow_private)

    async def cancel(self, run: Run, kind: str = "cancel") -> Run:
        """Stops a run wherever it runs (the owner sees the flag within one heartbeat);
        `kind="rollback"` also discards the checkpoints it wrote."""
        was_pending = run.status == "pending"
        run = await self.store.request_cancel(run, kind)
        self._stop_local(run.run_id, kind)
        if was_pending and run.status == "cancelled":
            await self._append_terminal(
                run.run_id, "cancelled", "cancelled before it started", False
            )
        return run

    async def resume(self, run: Run) -> Run:
        """Makes an interrupted or failed run pending again; it continues from its checkpoint."""
        run = await self.store.requeue(run)
        self._spawn(self._drain(run.thread_id))
        return run

    def _stop_local(self, run_id: str, kind: str) -> None:
        task = self._tasks.get(run_id)
        if task is not None and run_id not in self._cancel_kind:
            self._cancel_kind[run_id] = kind
            task.cancel()

    # -- executing ------------------------------------------------------------------------
    async def _drain(self, thread_id: str) -> None:
        if self.draining:
            return
        run = await self.store.claim_next(thread_id, self.owner, self.keel.settings.run_lease_s)
        if run is not None:
            task = asyncio.create_task(self._execute(run))
            self._tasks[run.run_id] = task

    async def _append_terminal(self, run_id: str, code: str, message: str, retryable: bool) -> None:
        seq = await self.store.last_seq(run_id) + 1
        await self.store.append(
            run_id, seq, "run.error", {"code": code, "message": message, "retryable": retryable}
        )
        self._wake(run_id)

    def _committed(self, run_id: str, batch: list[Event]) -> None:
        """A batch of the run's events is committed: local followers may read it now."""
        if (tail := self._tails.get(run_id)) is not None:
            tail[1].extend(batch)
        self._wake(run_id)

    def _wake(self, run_id: str) -> None:
        event = self._wakeups.get(run_id)
        if event is not None:
            event.set()

    async def _execute(self, run: Run) -> None:
        """Executes a claimed run inside its span (continuing the submitting request's trace),
        with its log tags and, when enabled, LangSmith tracing; one log line at the end."""
        started, tenant = time.monotonic(), tracing.tenant_hash(run.tenant)
        with (
            logs.bind(run_id=run.run_id, tenant_hash=tenant),
            tracing.span(
                "invoke_agent keel",
                {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": "keel",
                    "gen_ai.conversation.id": run.thread_id,
                    "keel.run.id": run.run_id,
                    "keel.run.attempt": run.attempts,
                    "keel.tenant.hash": tenant,
                },
                context=tracing.extract(run.request.get("trace")),
            ) as span,
            tracing.langsmith(self.keel.deps.redactor),
        ):
            outcome = await self._execute_run(run)
            elapsed = time.monotonic() - started
            if outcome is not None:
                metrics.RUNS.labels(outcome).inc()
                metrics.RUN_DURATION.labels(outcome).observe(elapsed)
                if "webhook" in run.request or "on_completion" in run.request:
                    self._spawn(self._ended(run, time.time() - elapsed))
            span.set_attribute("keel.run.outcome", outcome or "released")
            if outcome in ("failed", "cancelled"):
                tracing.fail(span, outcome)
            log.info(
                "run ended",
                extra={
                    "outcome": outcome or "released",
                    "duration_s": round(elapsed, 4),
                    "thread_id": run.thread_id,
                },
            )

    async def _execute_run(self, run: Run) -> Status | None:
        keel, store = self.keel, self.store
        seq = await store.last_seq(run.run_id)

        outcome: Status | None = None  # the run's terminal status
        metrics.RUNS_RUNNING.set(len(self._tasks))
        self._tails[run.run_id] = (seq + 1, [])
        writer = EventWriter(
            store, run.run_id, seq, lambda batch: self._committed(run.run_id, batch)
        )
        emit = writer.emit

        async def conclude(status: Status, name: str, data: dict[str, Any], error: str | None):
            # Everything before it committed, then the outcome event and the terminal row in one
            # transaction: whoever sees the event (and starts the next turn) finds the thread free.
            nonlocal outcome
            await writer.flush()
            writer.seq += 1
            result = data if name == "run.finished" else None
            await store.finish(run.run_id, status, result, error, (writer.seq, name, data))
            outcome = status
            self._committed(run.run_id, [(writer.seq, name, data)])

        config: RunnableConfig = {
            "configurable": {"thread_id": run.thread_id},
            "metadata": {"run_id": run.run_id, "tenant": run.tenant},
        }
        request = run.request
        context = Context(
            tenant=run.tenant,
            user_message=self._raw.pop(run.run_id, None) or request["message"],
            deadline_at=time.time() + self.keel.settings.run_deadline_s,
            **request["context"],  # the knobs, checked by the dialect that took the run
        )
        start_checkpoint = run.start_checkpoint_id
        if seq and await self._already_ended(run, seq):
            return "succeeded"
        try:
            state = await keel.graph.aget_state(config)
            checkpoint_id = state.config.get("configurable", {}).get("checkpoint_id")
            # Resume only this run's own unfinished checkpoint; anything else starts the turn anew.
            resume = bool(state.next) and (state.metadata or {}).get("run_id") == run.run_id
            if not resume and seq == 0:
                start_checkpoint = checkpoint_id
                await store.set_start_checkpoint(run.run_id, checkpoint_id)
            if seq == 0:
                emit(
                    "run.started",
                    {
                        "run_id": run.run_id,
                        "thread_id": run.thread_id,
                        "checkpoint_id": checkpoint_id,
                    },
                )
            else:
                emit(
                    "run.resumed",
                    {
                        "run_id": run.run_id,
                        "attempt": run.attempts,
                        "checkpoint_id": checkpoint_id,
                        "from_checkpoint": resume,
                    },
                )
            control: RunControl = request.get("control") or RunControl()
            async for name, data in graph_events(
                keel.graph,
                None if resume else graph_input(control, request["message"] is not None),
                config if resume else graph_config(config, control),
                context,
                request["durability"],
                request.get("stream_modes", ()),
                control.get("interrupt_before"),
                control.get("interrupt_after"),
                request.get("subgraphs", False),
            ):
                emit(name, data)
            snapshot = await keel.graph.aget_state(config)
            final = snapshot.values
            result = {
                "run_id": run.run_id,
                "thread_id": run.thread_id,
                "answer": final.get("answer", ""),
                "citations": await self._with_sections(run.tenant, final.get("citations", [])),
                "cached": final.get("cached", False),
                "found": final.get("found", True),
                # which kind of hit (exact / semantic) and its similarity; None on a miss
                "cache": final.get("cache") if final.get("cached") else None,
                "degraded": final.get("degraded", []),
                "usage": final.get("usage", {"input_tokens": 0, "output_tokens": 0}),
                "model": final.get("model"),
                "service_level": service_level(final),  # type: ignore[arg-type]
            }
            # Stopped at a breakpoint: `interrupted`, until a next run continues the thread.
            await conclude(
                "interrupted" if snapshot.next else "succeeded", "run.finished", result, None
            )
            metrics.ANSWERS.labels(result["service_level"]).inc()
            # Counted here, not where a client reads the result: background runs spend too.
            await self.keel.limiter.count_usage(run.tenant, run.run_id, result["usage"])
            await self._after_run(run, len(final.get("messages", [])), request["message"])
        except asyncio.CancelledError:
            kind = self._cancel_kind.pop(run.run_id, None)
            if kind is None or self._stopping:  # shutdown: hand the run to another replica
                with contextlib.suppress(Exception):  # its resumer numbers events after these
                    await writer.flush()
                await store.release(run.run_id)
                raise
            if kind == "rollback":
                await discard_after(keel.persistence, run.thread_id, start_checkpoint)
            message = "rolled back" if kind == "rollback" else "cancelled"
            error = {"code": "cancelled", "retryable": False, "message": message}
            await conclude("cancelled", "run.error", error, kind)
        except KeelError as exc:
            error = {"code": exc.code, "message": str(exc), "retryable": exc.retryable}
            await conclude("failed", "run.error", error, str(exc))
        except Exception as exc:
            log.exception("run %s failed", run.run_id)
            error = {"code": "internal_error", "message": type(exc).__name__, "retryable": False}
            await conclude("failed", "run.error", error, type(exc).__name__)
        finally:
            self._tasks.pop(run.run_id, None)
            metrics.RUNS_RUNNING.set(len(self._tasks))
            self._last_active = time.monotonic()
            self._cancel_kind.pop(run.run_id, None)
            self._wakeups.pop(run.run_id, None)  # followers still holding it fall back to polling
            self._tails.pop(run.run_id, None)
            if not self._stopping:
                self._spawn(self._drain(run.thread_id))
        return outcome

    async def _ended(self, run: Run, started_at: float) -> None:
        """After a run has ended: its webhook, then its thread's deletion when asked."""
        if "webhook" in run.request:
            await self._post_webhook(run, started_at)
        if run.request.get("on_completion") == "delete":
            with contextlib.suppress(NotFound):  # deleted meanwhile
                await delete_thread(self.keel.persistence, run.tenant, run.thread_id)

    async def _post_webhook(self, run: Run, started_at: float) -> None:
        """Posts the ended run to its webhook: the thread's values, and the error of a run that
        did not succeed. Never raises: the run's outcome stands."""
        try:
            ended = await self.store.get(run.run_id)
            config: RunnableConfig = {"configurable": {"thread_id": run.thread_id}}
            values = to_json(dict((await self.keel.graph.aget_state(config)).values))
            error = None
            name, data = await self.outcome(ended)
            if name == "run.error":
                error = {"error": data["code"], "message": data["message"]}
            sent = webhooks.payload(run_body(ended), started_at, values, error)
            settings = self.keel.settings
            await webhooks.deliver(
                run.request["webhook"],
                sent,
                settings.webhook_timeout_s,
                settings.webhook_allow_private,
            )
        except Exception:
            log.exception("webhook of run %s failed", run.run_id)

    async def _already_ended(self, run: Run, seq: int) -> bool:
        """A run whose replica died after logging its answer: record it, don't answer twice.
        (A logged `run.error` does not count: resuming an interrupted run is meant to rerun.)"""
        last = await self.store.events_after(run.run_id, seq - 1)
        if not last or last[-1][1] != "run.finished":
            return False
        await self.store.finish(run.run_id, "succeeded", last[-1][2], None)
        self._tasks.pop(run.run_id, None)
        return True

    async def _with_sections(self, tenant: str, citations: list[Citation]) -> list[Citation]:
        """Citations with the section (heading path) of the chunk each one cites."""
        if not citations:
            return []
        corpus = self.keel.deps.corpora.get(tenant)
        chunks = await asyncio.to_thread(corpus.chunks, [c["id"] for c in citations])
        return [
            c | {"section": chunk.section if (chunk := chunks.get(c["id"])) else ""}
            for c in citations
        ]

    async def _after_run(self, run: Run, message_count: int, question: str | None) -> None:
        settings = self.keel.settings
        await touch_thread(
            self.keel.persistence, run.tenant, run.thread_id, message_count, question
        )
        if settings.retention_checkpoints:
            await keep_latest(self.keel.persistence, run.thread_id, settings.retention_checkpoints)

    # -- following ------------------------------------------------------------------------
    async def follow(self, run: Run, after: int) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
        """The run's events after sequence number `after`, then the live rest, to the end."""
        if run.events_pruned:
            yield (
                after,
                "run.error",
                {
                    "code": "events_pruned",
                    "retryable": False,
                    "message": "this run's event log was removed by retention",
                },
            )
            return
        wakeup = self._wakeups.setdefault(run.run_id, asyncio.Event())
        last = after
        while not self.closed:
            wakeup.clear()
            tail = self._tails.get(run.run_id)
            if tail is not None and tail[0] <= last + 1:  # executing here: its log is in memory
                batch = tail[1][last + 1 - tail[0] :]
                for seq, name, data in batch:
                    yield seq, name, data
                    last = seq
                if batch and batch[-1][1] in TERMINAL_EVENTS:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), POLL_S)
                continue
            batch = await self.store.events_after(run.run_id, last)
            for seq, name, data in batch:
                yield seq, name, data
                last = seq
            if batch and batch[-1][1] in TERMINAL_EVENTS and len(batch) < EVENT_BATCH:
                return
            if len(batch) == EVENT_BATCH:
                continue
            if not batch:
                latest = await self.store.last_event(run.run_id)
                if latest and latest[0] > last:
                    continue  # logged after our read: fetch it now
                if latest and latest[1] in TERMINAL_EVENTS:  # we are past the outcome
                    return
            # Cleared before the read: a commit after it has set the wakeup, so nothing is missed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), POLL_S)

    async def outcome(self, run: Run) -> tuple[str, dict[str, Any]]:
        """Waits until the run ends: (`run.finished` or `run.error`, its data).

        The run row's status decides, not the log alone: a resumed run's log holds the earlier
        attempt's `run.error`. A row turns terminal only after its outcome event is logged."""
        wakeup = self._wakeups.setdefault(run.run_id, asyncio.Event())
        while True:
            wakeup.clear()
            task = self._tasks.get(run.run_id)
            if task is not None:  # executing here: its end, not each event commit, is worth a read
                await asyncio.wait({task})
            current = await self.store.get(run.run_id)
            if current.status not in ("pending", "running"):
                tail = await self.store.events_after(
                    run.run_id, max(await self.store.last_seq(run.run_id) - 2, 0)
                )
                outcomes = [(name, data) for _, name, data in tail if name in TERMINAL_EVENTS]
                if outcomes:
                    return outcomes[-1]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), POLL_S)
