"""The breaker rules, the retry budget, hedging and the LLM chain's retry owner (fake chat
models only)."""

import asyncio
import time
from typing import Any

import pytest
import redis as sync_redis
from langchain_core.messages import HumanMessage

from graph.errors import CircuitOpen, ProviderError
from graph.settings import Settings
from integrations.breakers import BreakerRules, BreakerState, LocalBreakers, RedisBreakers
from integrations.llm import LLMChain, RetryBudget, build_chat_models, target_key
from tests.fakes import SlowChatModel, failing, recording

RULES = BreakerRules()


def test_breaker_opens_at_half_failures_over_ten_calls_in_the_window():
    state = BreakerState()
    for n in range(9):
        state.record(100.0 + n * 0.1, "failure" if n % 2 else "success", RULES, None)
    assert state.status(101.0) == "closed"  # 9 calls: below the minimum
    state.record(101.0, "failure", RULES, None)  # 10 calls, 5 failures
    assert state.status(101.0) == "open"
    assert not state.admit(105.9, RULES)
    assert state.status(106.1) == "half_open"


def test_old_calls_leave_the_window():
    state = BreakerState()
    for _ in range(9):
        state.record(100.0, "failure", RULES, None)
    state.record(111.0, "failure", RULES, None)  # the nine are older than 10 s
    assert state.status(111.0) == "closed"


def test_five_timeouts_in_a_row_open_and_a_success_breaks_the_streak():
    state = BreakerState()
    for _ in range(4):
        state.record(100.0, "timeout", RULES, None)
    state.record(100.0, "success", RULES, None)
    for _ in range(4):
        state.record(100.0, "timeout", RULES, None)
    assert state.status(100.0) == "closed"
    state.record(100.0, "timeout", RULES, None)
    assert state.status(100.0) == "open"


def test_429_opens_for_exactly_its_retry_after_and_a_longer_cooldown_wins():
    state = BreakerState()
    state.record(100.0, "rate_limited", RULES, 2.5)
    assert state.status(102.4) == "open" and state.status(102.6) == "half_open"
    state = BreakerState()
    state.record(100.0, "rate_limited", RULES, 30.0)
    state.record(101.0, "rate_limited", RULES, 1.0)  # shorter: the 30 s stands
    assert state.status(120.0) == "open"


def test_half_open_admits_one_probe_and_doubles_the_cooldown_on_failure():
    state = BreakerState()
    for _ in range(5):
        state.record(100.0, "timeout", RULES, None)
    assert state.admit(105.0, RULES) and not state.admit(105.0, RULES)  # one probe
    state.record(105.5, "failure", RULES, None)
    assert state.cooldown_s == 10.0 and state.status(115.4) == "open"
    assert state.admit(115.6, RULES)
    state.record(115.7, "success", RULES, None)
    assert state.status(115.7) == "closed" and state.cooldown_s == 0.0
    for cooldown in (5.0, 10.0, 20.0, 40.0, 60.0, 60.0):
        state.open_until, state.cooldown_s = 0.0, cooldown
        state.record(200.0, "failure", RULES, None)
    assert state.cooldown_s == 60.0  # doubling stops at the cap


def test_retry_budget_is_a_share_of_calls_plus_a_reserve():
    budget = RetryBudget(ratio=0.2, reserve=3)
    for _ in range(10):
        budget.call()
    assert [budget.spend() for _ in range(6)] == [True] * 5 + [False]


@pytest.fixture
async def shared_breakers(redis_url: str):
    """Two breaker boards on one real Redis, as two replicas would have."""
    sync_redis.Redis.from_url(redis_url).delete("keel:breaker:host/m")
    boards = [RedisBreakers(redis_url), RedisBreakers(redis_url)]
    yield boards
    for board in boards:
        await board.aclose()


async def test_a_breaker_opened_through_one_redis_client_stops_another(shared_breakers):
    one, two = shared_breakers
    assert await two.admit("host/m")
    await one.record("host/m", "rate_limited", 5.0)
    assert not await two.admit("host/m")
    snapshot = await two.snapshot()
    assert snapshot["host/m"]["status"] == "open"


async def test_a_half_open_shared_breaker_admits_one_probe_across_replicas(shared_breakers):
    # Closed and open are decided by one read; half-open still takes its probe slot atomically.
    one, two = shared_breakers
    await one.record("host/m", "rate_limited", 0.2)
    assert not await one.admit("host/m") and not await two.admit("host/m")
    await asyncio.sleep(0.3)
    assert [await one.admit("host/m"), await two.admit("host/m")] == [True, False]
    await two.record("host/m", "success", None)
    assert await one.admit("host/m") and await two.admit("host/m")


def chain(models: list[Any], **overrides: Any) -> LLMChain:
    settings = Settings(**{"llm_first_token_timeout_s": 0.5, **overrides})
    return LLMChain(settings, models, LocalBreakers())


async def test_failures_before_any_text_are_retried_twice_then_raised():
    llm = chain([failing()])
    with pytest.raises(ProviderError) as raised:
        await llm.stream(llm.models[0], [HumanMessage("q")], lambda _: None)
    assert llm.upstream_calls == 3 and raised.value.partial == ""


async def test_an_open_breaker_makes_no_call():
    llm = chain([failing()])
    key = target_key(llm.models[0])
    await llm.breakers.record(key, "rate_limited", 60.0)
    with pytest.raises(CircuitOpen):
        await llm.stream(llm.models[0], [HumanMessage("q")], lambda _: None)
    assert llm.upstream_calls == 0


async def test_a_spent_retry_budget_stops_retrying():
    llm = chain([failing()], llm_retry_budget_ratio=0.0, llm_retry_budget_reserve=1)
    for _ in range(3):
        with pytest.raises(ProviderError):
            await llm.stream(llm.models[0], [HumanMessage("q")], lambda _: None)
    assert llm.upstream_calls == 3 + 1  # three first attempts, one retry in all


async def test_text_is_streamed_once_and_usage_returned():
    llm = chain([recording("Answer [1].")])
    seen: list[str] = []
    await llm.stream(llm.models[0], [HumanMessage("q")], seen.append)
    assert "".join(seen) == "Answer [1]." and llm.upstream_calls == 1


async def test_a_stream_the_caller_stops_reads_no_further():
    model = recording("one two three four five six")
    pulled: list[str] = []
    answer = model._astream

    async def counted(*args: Any, **kwargs: Any) -> Any:
        async for chunk in answer(*args, **kwargs):
            pulled.append(chunk.text)
            yield chunk

    object.__setattr__(model, "_astream", counted)
    llm = chain([model])
    seen: list[str] = []
    await llm.stream(llm.models[0], [HumanMessage("q")], seen.append, stop=lambda: "two" in seen)
    # the text up to the stop reached the caller, and the model was asked for no more
    assert "".join(seen) == "one two" and "".join(pulled) == "one two"
    assert llm.upstream_calls == 1


async def test_a_late_first_token_is_hedged_and_the_first_text_wins():
    slow = SlowChatModel(messages=iter([]), delay_s=30)
    llm = chain([slow, recording("From the hedge [1].")], llm_first_token_timeout_s=8)
    seen: list[str] = []
    started = time.monotonic()
    _, answered = await llm.stream(
        llm.models[0], [HumanMessage("q")], seen.append, hedge=llm.models[1]
    )
    assert answered is llm.models[1] and "".join(seen) == "From the hedge [1]."
    assert 1.0 <= time.monotonic() - started < 5  # hedged after 1 s, not after the 8 s timeout
    assert llm.upstream_calls == 2
    # The hedge budget (5% of calls, 1 in reserve) is spent: the next late call waits it out.
    assert not llm.hedges.spend()


def test_a_self_hosted_model_gets_max_tokens_and_time_for_its_first_token():
    settings = Settings(
        llm_base_url="http://127.0.0.1:9/v1",
        llm_max_tokens=77,
        llm_first_token_timeout_s=40,
        llm_idle_timeout_s=15,
    )
    (model,) = build_chat_models(settings)
    payload = model._get_request_payload([HumanMessage("hi")])  # type: ignore[attr-defined]
    # llama-cpp-python's server reads `max_tokens` only; OpenAI's API gets no extra field.
    assert payload["max_completion_tokens"] == 77 and payload["extra_body"] == {"max_tokens": 77}
    # The socket may stay silent until the first token: the read timeout waits that long.
    assert model.request_timeout.read == 40  # type: ignore[attr-defined]
    hosted = build_chat_models(Settings(KEEL_LLM_API_KEY="sk-test"))[0]
    assert "extra_body" not in hosted._get_request_payload([HumanMessage("hi")])  # type: ignore[attr-defined]
