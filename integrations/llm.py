"""OpenAI-compatible chat models (OpenAI, vLLM, Ollama, llama.cpp) through langchain-openai, and
`LLMChain`, the one owner of retries, timeouts and circuit breakers for every LLM call.

The OpenAI client's own retries are off and LangGraph retries no LLM node, so an upstream call
happens only here: at most `llm_max_retries` retries per call (full jitter, base 250 ms, cap 4 s),
never sleeping past the run's deadline, and within a retry budget (retries over the last 10 s at
most 20% of calls plus 3). A call is retried only while it has sent no text: after the first
token, the next model continues instead (see `nodes/fallback.py`).
"""

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_openai import ChatOpenAI
from opentelemetry.trace import Span, SpanKind
from tenacity import AsyncRetrying, RetryCallState

from graph.errors import CircuitOpen, DeadlineExceeded, ProviderError, ProviderTimeout
from graph.settings import Settings
from integrations import metrics, tracing
from integrations.breakers import Breakers, LocalBreakers, Outcome, RedisBreakers

RETRY_BASE_S, RETRY_CAP_S = 0.25, 4.0


def build_chat_models(settings: Settings) -> list[BaseChatModel]:
    """The provider chain, primary first; empty when no endpoint or key is configured."""
    if not settings.llm_configured:
        return []
    models = [settings.llm_model]
    if settings.llm_fallback_model:
        models.append(settings.llm_fallback_model)
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed"
    # The read timeout only bounds a silent socket; first-token and idle limits are LLMChain's
    # (a server such as llama.cpp's sends nothing until its first token).
    silent_s = max(settings.llm_idle_timeout_s, settings.llm_first_token_timeout_s)
    timeout = httpx.Timeout(silent_s, connect=settings.llm_connect_timeout_s, pool=5.0)
    # langchain-openai sends the limit as `max_completion_tokens`, which self-hosted servers
    # (llama-cpp-python's) ignore: they get `max_tokens` as well.
    extra_body = {"max_tokens": settings.llm_max_tokens} if settings.llm_base_url else None
    return [
        ChatOpenAI(
            model=name,
            base_url=settings.llm_base_url,
            api_key=api_key,  # type: ignore[arg-type]
            timeout=timeout,
            max_retries=0,  # LLMChain is the one retry owner
            max_tokens=settings.llm_max_tokens,  # type: ignore[call-arg]
            extra_body=extra_body,
            streaming=True,
            stream_usage=True,
            temperature=0,
        )
        for name in models
    ]


def model_name(model: BaseChatModel) -> str:
    """A model's name for summaries, breaker keys and cache keys."""
    return str(
        getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__
    )


def target_key(model: BaseChatModel) -> str:
    """The breaker's key for a model: its provider's host and the model name."""
    base = getattr(model, "openai_api_base", None) or ""
    host = urlparse(str(base)).netloc or type(model).__name__
    return f"{host}/{model_name(model)}"


class RetryBudget:
    """Retries over the last `window_s` at most `ratio` of the calls plus `reserve` (per replica),
    so a failing provider never gets a multiple of the real traffic."""

    def __init__(self, ratio: float = 0.2, reserve: int = 3, window_s: float = 10.0):
        self.ratio, self.reserve, self.window_s = ratio, reserve, window_s
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _prune(self, now: float) -> None:
        for log in (self._calls, self._retries):
            while log and log[0] < now - self.window_s:
                log.popleft()

    def call(self) -> None:
        """Counts a first attempt."""
        self._calls.append(time.monotonic())

    def spend(self) -> bool:
        """Takes one retry from the budget; False when it is spent."""
        now = time.monotonic()
        self._prune(now)
        if len(self._retries) + 1 > self.ratio * len(self._calls) + self.reserve:
            return False
        self._retries.append(now)
        return True


@dataclass(frozen=True)
class Failure:
    """How one failed attempt counts: for the breaker, and whether it may be retried."""

    outcome: Outcome | None  # None: the caller's fault (4xx), not the provider's health
    retryable: bool
    retry_after_s: float | None = None


def classify(exc: BaseException) -> Failure:
    """Maps an attempt's exception to its breaker outcome and retry decision."""
    if isinstance(exc, DeadlineExceeded):
        return Failure("timeout", False)
    if isinstance(exc, ProviderTimeout | openai.APITimeoutError | TimeoutError):
        # A stall is not retried on the same target: the next one answers sooner.
        return Failure("timeout", False)
    if isinstance(exc, openai.RateLimitError):
        header = exc.response.headers.get("retry-after")
        retry_after = float(header) if header and header.replace(".", "", 1).isdigit() else None
        return Failure("rate_limited", False, retry_after)
    if isinstance(exc, openai.APIStatusError) and exc.status_code < 500:
        return Failure(None, False)
    return Failure("failure", True)


class _AttemptFailed(Exception):
    """One attempt failed; carries what was streamed and how it counts."""

    def __init__(self, cause: BaseException, partial: str, failure: Failure):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.partial, self.failure = cause, partial, failure


class LLMChain:
    """The chat models of the provider chain behind retries, timeouts and breakers."""

    def __init__(self, settings: Settings, models: list[BaseChatModel], breakers: Breakers):
        self.settings, self.models, self.breakers = settings, models, breakers
        self.budget = RetryBudget(
            settings.llm_retry_budget_ratio, settings.llm_retry_budget_reserve
        )
        self.upstream_calls = 0  # attempts that reached a provider, for tests and benchmarks
        self.hedges = RetryBudget(settings.llm_hedge_ratio, 1)
        self._first_token_s: deque[float] = deque(maxlen=100)
        self._variants: dict[str, BaseChatModel] = {}

    @classmethod
    def from_settings(cls, settings: Settings, models: list[BaseChatModel]) -> "LLMChain":
        """Shared breakers with `KEEL_REDIS_URL`, else this process's own."""
        breakers: Breakers = (
            RedisBreakers(settings.redis_url) if settings.redis_url else LocalBreakers()
        )
        return cls(settings, models, breakers)

    def allows(self, name: str | None) -> bool:
        """True when a run may ask for model `name` (None: the configured chain)."""
        configured = [model_name(m) for m in self.models]
        return name is None or name in configured or name in self.settings.llm_allowed_models

    def chain_for(self, name: str | None) -> list[BaseChatModel]:
        """The chain a run uses: `name` (an allowed model) in place of the primary."""
        if name is None or not self.models or name == model_name(self.models[0]):
            return self.models
        if name not in self._variants:
            self._variants[name] = self.models[0].model_copy(update={"model_name": name})
        return [self._variants[name], *self.models[1:]]

    async def aclose(self) -> None:
        """Closes the breakers' connections."""
        await self.breakers.aclose()

    async def stream(
        self,
        model: BaseChatModel,
        prompt: list[BaseMessage],
        send: Callable[[str], None],
        deadline_at: float | None = None,
        hedge: BaseChatModel | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> tuple[dict[str, int], BaseChatModel]:
        """Streams `model`'s answer into `send`, retrying failures that sent no text; returns
        token usage and the model that answered (`hedge`, if given, may race the first
        attempt). The answer ends early, and its request with it, once `stop` says so after a
        text. Raises `CircuitOpen`, `ProviderTimeout`, `ProviderError` (with the text
        already sent as `partial`) or `DeadlineExceeded`."""
        deadline = deadline_at or time.time() + self.settings.run_deadline_s
        key = target_key(model)
        # An open breaker refuses before any retry machinery, and is not a call for the budget.
        if not await self.breakers.admit(key):
            raise self._refused(model, key)
        self.budget.call()

        attempts = 1 + self.settings.llm_max_retries

        def may_retry(state: RetryCallState) -> bool:
            # Spends the budget only on a retry that will happen (attempts and time left).
            exc = state.outcome.exception() if state.outcome else None
            return (
                isinstance(exc, _AttemptFailed)
                and exc.failure.retryable
                and not exc.partial
                and state.attempt_number < attempts
                and time.time() < deadline
                and self.budget.spend()
                and _counted(metrics.LLM_RETRIES.labels(model_name(model)))
            )

        def give_up(state: RetryCallState) -> bool:
            late = time.time() + (state.upcoming_sleep or 0.0) >= deadline
            return state.attempt_number >= attempts or late

        retrying = AsyncRetrying(stop=give_up, wait=_full_jitter, retry=may_retry, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    retry = attempt.retry_state.attempt_number > 1
                    if retry and not await self.breakers.admit(key):
                        raise self._refused(model, key)
                    if hedge is not None and attempt.retry_state.attempt_number == 1:
                        return await self._race(model, hedge, prompt, send, deadline, stop)
                    return await self._attempt(model, key, prompt, send, deadline, stop), model
        except _AttemptFailed as failed:
            cause = failed.cause
            if isinstance(cause, DeadlineExceeded):
                raise DeadlineExceeded(str(cause)) from cause
            kind = ProviderTimeout if failed.failure.outcome == "timeout" else ProviderError
            message = str(cause) if isinstance(cause, ProviderError) else str(failed)
            raise kind(message, partial=failed.partial) from cause
        raise AssertionError("unreachable: tenacity returns or raises")

    @staticmethod
    def _refused(model: BaseChatModel, key: str) -> CircuitOpen:
        metrics.BREAKER_STATE.labels(model_name(model)).set(2)
        return CircuitOpen(f"circuit open for {key}")

    async def _attempt(
        self,
        model: BaseChatModel,
        key: str,
        prompt: list[BaseMessage],
        send: Callable[[str], None],
        deadline: float,
        stop: Callable[[], bool] | None = None,
    ) -> dict[str, int]:
        """One request to `model`, inside its `chat {model}` client span (GenAI conventions)."""
        name = model_name(model)
        # `_stream` sets error.type itself (the cause, not the wrapper it raises).
        with tracing.tracer.start_as_current_span(
            f"chat {name}",
            kind=SpanKind.CLIENT,
            attributes=self._span_attributes(model),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if tracing.capture_content():
                span.set_attribute("gen_ai.input.messages", tracing.messages_attribute(prompt))
            return await self._stream(model, key, prompt, send, deadline, span, stop)

    def _span_attributes(self, model: BaseChatModel) -> dict[str, Any]:
        base = urlparse(str(getattr(model, "openai_api_base", None) or ""))
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai"
            if isinstance(model, ChatOpenAI)
            else type(model).__name__,
            "gen_ai.request.model": model_name(model),
            "gen_ai.request.stream": True,
            "gen_ai.request.max_tokens": self.settings.llm_max_tokens,
        }
        if base.hostname:
            default_port = 443 if base.scheme == "https" else 80
            attributes |= {
                "server.address": base.hostname,
                "server.port": base.port or default_port,
            }
        return attributes

    async def _stream(
        self,
        model: BaseChatModel,
        key: str,
        prompt: list[BaseMessage],
        send: Callable[[str], None],
        deadline: float,
        span: Span,
        stop: Callable[[], bool] | None,
    ) -> dict[str, int]:
        settings = self.settings
        sent: list[str] = []
        usage = {"input_tokens": 0, "output_tokens": 0}
        response: dict[str, Any] = {}
        self.upstream_calls += 1
        name = model_name(model)
        chunks = model.astream(prompt).__aiter__()
        started = time.time()
        # The first token must come within llm_first_token_timeout_s, each next one within
        # llm_idle_timeout_s of the last text; empty deltas and keep-alives don't reset it.
        limit = started + settings.llm_first_token_timeout_s
        try:
            while True:
                if time.time() >= deadline:
                    raise DeadlineExceeded("the run's deadline passed while the model answered")
                wait = min(limit, deadline) - time.time()
                try:
                    chunk = await asyncio.wait_for(_next(chunks), max(wait, 0.0))
                except TimeoutError:
                    # The run's deadline cut this wait short (asyncio may wake a moment early,
                    # before the clock reads the deadline): that is the deadline, not the model.
                    if deadline <= limit or time.time() >= deadline:
                        raise DeadlineExceeded("the run's deadline passed") from None
                    what = "next token" if sent else "first token"
                    raise ProviderTimeout(f"no {what} within {wait:.1f} s") from None
                if chunk is None:
                    break
                if chunk.text:
                    if not sent:
                        first = time.time() - started
                        self._first_token_s.append(first)
                        metrics.LLM_FIRST_TOKEN.labels(name).observe(first)
                        span.set_attribute("gen_ai.response.time_to_first_chunk", first)
                    sent.append(chunk.text)
                    send(chunk.text)
                    if stop is not None and stop():
                        break  # the caller has what it needs; closing the stream ends the request
                    limit = time.time() + settings.llm_idle_timeout_s
                if chunk.usage_metadata:
                    usage["input_tokens"] += chunk.usage_metadata.get("input_tokens", 0)
                    usage["output_tokens"] += chunk.usage_metadata.get("output_tokens", 0)
                response |= {k: v for k, v in chunk.response_metadata.items() if v}
            if not "".join(sent).strip():
                raise ProviderError("the model returned an empty answer")
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as exc:
            failure = classify(exc)
            outcome = failure.outcome or "client_error"
            metrics.LLM_REQUESTS.labels(name, outcome).inc()
            metrics.LLM_DURATION.labels(name, outcome).observe(time.time() - started)
            tracing.fail(span, _error_type(exc))
            if failure.outcome is not None:
                status = await self.breakers.record(key, failure.outcome, failure.retry_after_s)
                metrics.BREAKER_STATE.labels(name).set(metrics.BREAKER_LEVEL[status])
            raise _AttemptFailed(exc, "".join(sent), failure) from exc
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(chunks.aclose(), 1.0)  # type: ignore[attr-defined]
        status = await self.breakers.record(key, "success", None)
        metrics.BREAKER_STATE.labels(name).set(metrics.BREAKER_LEVEL[status])
        metrics.LLM_REQUESTS.labels(name, "success").inc()
        metrics.LLM_DURATION.labels(name, "success").observe(time.time() - started)
        metrics.LLM_TOKENS.labels(name, "input").inc(usage["input_tokens"])
        metrics.LLM_TOKENS.labels(name, "output").inc(usage["output_tokens"])
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": usage["input_tokens"],
                "gen_ai.usage.output_tokens": usage["output_tokens"],
                "gen_ai.response.model": str(response.get("model_name") or name),
            }
        )
        if "finish_reason" in response:
            span.set_attribute("gen_ai.response.finish_reasons", [str(response["finish_reason"])])
        if tracing.capture_content():
            answer = [AIMessage("".join(sent))]
            span.set_attribute("gen_ai.output.messages", tracing.messages_attribute(answer))
        return usage

    def hedge_after_s(self) -> float:
        """When a hedge goes: the p95 of the last 100 first tokens, and never before 1 s."""
        if not self._first_token_s:
            return 1.0
        ordered = sorted(self._first_token_s)
        return max(1.0, ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))])

    async def _race(
        self,
        model: BaseChatModel,
        hedge: BaseChatModel,
        prompt: list[BaseMessage],
        send: Callable[[str], None],
        deadline: float,
        stop: Callable[[], bool] | None,
    ) -> tuple[dict[str, int], BaseChatModel]:
        """The first attempt, and a hedge on the next healthy target when the first token is
        late (hedges at most `llm_hedge_ratio` of calls): the first text wins, the loser is
        cancelled, and only the winner's text reaches `send`."""
        self.hedges.call()
        tasks: dict[str, tuple[asyncio.Task[dict[str, int]], BaseChatModel]] = {}
        winner: list[str] = []

        def gate(key: str) -> Callable[[str], None]:
            def emit(text: str) -> None:
                if not winner:
                    winner.append(key)
                    for other, (task, _) in tasks.items():
                        if other != key:
                            task.cancel()
                if winner[0] == key:
                    send(text)

            return emit

        for candidate in (model, hedge):
            key = target_key(candidate)
            if tasks:
                done, _ = await asyncio.wait(
                    [task for task, _ in tasks.values()], timeout=self.hedge_after_s()
                )
                if done or winner or not await self.breakers.admit(key):
                    break
                if not self.hedges.spend():
                    break
                metrics.LLM_HEDGES.labels(model_name(candidate)).inc()
            attempt = self._attempt(candidate, key, prompt, gate(key), deadline, stop)
            tasks[key] = (asyncio.create_task(attempt), candidate)
        failure: BaseException | None = None
        for task, candidate in sorted(tasks.values(), key=lambda t: t[0].done(), reverse=True):
            try:
                return await task, candidate
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
            except _AttemptFailed as exc:
                if winner and tasks[winner[0]][0] is task:
                    raise
                failure = exc
        raise failure or ProviderError("every hedged attempt was cancelled")

    async def snapshot(self) -> list[dict[str, Any]]:
        """The chain's models, and every other target with a breaker state, with that state."""
        states = await self.breakers.snapshot()
        closed = {"status": "closed", "cooldown_s": 0.0, "open_for_s": 0.0}
        targets = dict.fromkeys([*(target_key(m) for m in self.models), *sorted(states)])
        return [{"target": t, **states.get(t, closed)} for t in targets]


def _counted(counter: Any) -> bool:
    counter.inc()
    return True


def _error_type(exc: BaseException) -> str:
    """`error.type` of a failed attempt: the HTTP status, `timeout`, or the exception's class."""
    if isinstance(exc, openai.APIStatusError):
        return str(exc.status_code)
    if classify(exc).outcome == "timeout":
        return "timeout"
    return type(exc).__qualname__


def _full_jitter(state: RetryCallState) -> float:
    """Full jitter: uniform over [0, min(cap, base x 2^(retry-1))]."""
    return random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (state.attempt_number - 1)))


async def _next(chunks: AsyncIterator[Any]) -> Any:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None
