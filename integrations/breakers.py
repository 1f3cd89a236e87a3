"""Circuit breakers per LLM target (provider and model), in process or shared through Redis.

A breaker opens when, within `window_s`, at least `min_calls` calls saw `failure_ratio`
failures or more; after `max_timeouts` timeouts in a row; or on a 429 for exactly its
`Retry-After`. An open breaker turns half-open after its cooldown (5 s, doubling on each
re-open up to 60 s) and lets a single probe through; the probe's outcome closes or re-opens
it. A longer cooldown always wins over a shorter one.

The rules live once, in `BreakerState` (pure, serialisable); `LocalBreakers` keeps the states
in memory, `RedisBreakers` in Redis under optimistic transactions, read on every call (one GET
unless half-open), so a breaker opened by one replica stops the others' next call.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol, TypeVar

import redis.asyncio as redis

log = logging.getLogger("keel.breakers")

Outcome = Literal["success", "failure", "timeout", "rate_limited"]
Status = Literal["closed", "open", "half_open"]
T = TypeVar("T")
PREFIX = "keel:breaker:"


@dataclass(frozen=True)
class BreakerRules:
    """When a breaker opens and how long it stays open."""

    window_s: float = 10.0
    min_calls: int = 10
    failure_ratio: float = 0.5
    max_timeouts: int = 5
    cooldown_s: float = 5.0
    max_cooldown_s: float = 60.0
    probe_ttl_s: float = 30.0  # a probe that never reports back frees the slot after this


@dataclass
class BreakerState:
    """One target's breaker: the call window (per-second buckets), the streak of timeouts and
    the open/half-open bookkeeping. All times are epoch seconds."""

    buckets: dict[str, list[int]] = field(default_factory=dict)  # second -> [calls, failures]
    timeouts_in_a_row: int = 0
    open_until: float = 0.0
    cooldown_s: float = 0.0  # the cooldown of the current opening; 0 while closed
    probe_until: float = 0.0

    def status(self, now: float) -> Status:
        """`open` until the cooldown ends, then `half_open` until a probe closes it."""
        if self.open_until > now:
            return "open"
        return "half_open" if self.cooldown_s else "closed"

    def admit(self, now: float, rules: BreakerRules) -> bool:
        """True when a call may go (a half-open breaker admits one probe at a time)."""
        status = self.status(now)
        if status == "closed":
            return True
        if status == "open" or self.probe_until > now:
            return False
        self.probe_until = now + rules.probe_ttl_s
        return True

    def record(
        self, now: float, outcome: Outcome, rules: BreakerRules, retry_after_s: float | None
    ) -> None:
        """Counts one call's outcome and opens, re-opens or closes the breaker."""
        if self.status(now) == "half_open":
            self.probe_until = 0.0
            if outcome == "success":
                self.buckets, self.timeouts_in_a_row = {}, 0
                self.open_until = self.cooldown_s = 0.0
            else:
                self._open(now, min(self.cooldown_s * 2, rules.max_cooldown_s), retry_after_s)
            return
        second = int(now)
        self.buckets = {
            s: counts for s, counts in self.buckets.items() if int(s) > second - rules.window_s
        }
        calls, failures = self.buckets.get(str(second), [0, 0])
        self.buckets[str(second)] = [calls + 1, failures + (outcome != "success")]
        self.timeouts_in_a_row = self.timeouts_in_a_row + 1 if outcome == "timeout" else 0
        total = sum(c for c, _ in self.buckets.values())
        failed = sum(f for _, f in self.buckets.values())
        if (
            outcome == "rate_limited"
            or self.timeouts_in_a_row >= rules.max_timeouts
            or (total >= rules.min_calls and failed / total >= rules.failure_ratio)
        ):
            self._open(now, max(self.cooldown_s, rules.cooldown_s), retry_after_s)

    def _open(self, now: float, cooldown_s: float, retry_after_s: float | None) -> None:
        # A 429 opens for exactly its Retry-After; a longer cooldown already running wins.
        wait = retry_after_s if retry_after_s is not None else cooldown_s
        self.open_until = max(self.open_until, now + wait)
        self.cooldown_s = cooldown_s
        self.buckets, self.timeouts_in_a_row = {}, 0


class Breakers(Protocol):
    """Where the breakers' states live."""

    async def admit(self, target: str) -> bool:
        """True when a call to `target` may go now."""
        ...

    async def record(self, target: str, outcome: Outcome, retry_after_s: float | None) -> Status:
        """Reports a call's outcome; returns the breaker's status after it."""
        ...

    async def snapshot(self) -> dict[str, dict[str, object]]:
        """Every known target's status, cooldown and seconds until it may half-open."""
        ...

    async def aclose(self) -> None:
        """Releases connections."""
        ...


def _describe(state: BreakerState, now: float) -> dict[str, object]:
    return {
        "status": state.status(now),
        "cooldown_s": state.cooldown_s,
        "open_for_s": round(max(0.0, state.open_until - now), 3),
    }


class LocalBreakers:
    """Breakers of one process (the embedded default)."""

    def __init__(self, rules: BreakerRules | None = None):
        self.rules = rules or BreakerRules()
        self._states: dict[str, BreakerState] = {}

    async def admit(self, target: str) -> bool:
        return self._states.setdefault(target, BreakerState()).admit(time.time(), self.rules)

    async def record(self, target: str, outcome: Outcome, retry_after_s: float | None) -> Status:
        state, now = self._states.setdefault(target, BreakerState()), time.time()
        state.record(now, outcome, self.rules, retry_after_s)
        return state.status(now)

    async def snapshot(self) -> dict[str, dict[str, object]]:
        now = time.time()
        return {target: _describe(state, now) for target, state in self._states.items()}

    async def aclose(self) -> None:
        return None


class RedisBreakers:
    """Breakers shared by every replica: one JSON state per target, updated under WATCH.

    While Redis is down, the replica falls back to its own in-process breakers."""

    def __init__(self, url: str, rules: BreakerRules | None = None):
        self.rules = rules or BreakerRules()
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._local = LocalBreakers(self.rules)
        self._warned = 0.0

    async def _update(self, target: str, apply: Callable[[BreakerState, float], T]) -> T:
        """Applies `apply` to the target's shared state atomically (retried on conflict)."""
        key = f"{PREFIX}{target}"
        ttl = int(self.rules.max_cooldown_s + self.rules.probe_ttl_s) * 2
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(50):
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    state = BreakerState(**json.loads(raw)) if raw else BreakerState()
                    before = asdict(state)
                    result = apply(state, time.time())
                    if asdict(state) == before:
                        await pipe.unwatch()
                        return result
                    pipe.multi()
                    pipe.set(key, json.dumps(asdict(state)), ex=ttl)
                    await pipe.execute()
                    return result
                except redis.WatchError:
                    await asyncio.sleep(0)
        raise redis.RedisError("breaker state kept changing under WATCH")

    def _redis_down(self, exc: Exception) -> None:
        if time.time() - self._warned > 60:
            self._warned = time.time()
            log.warning("breakers: redis unavailable (%s); per-replica breakers", exc)

    async def admit(self, target: str) -> bool:
        try:
            # One read decides a closed or open breaker (admitting changes neither); only a
            # half-open one takes its probe slot under WATCH.
            raw = await self._redis.get(f"{PREFIX}{target}")
            status = BreakerState(**json.loads(raw)).status(time.time()) if raw else "closed"
            if status != "half_open":
                return status == "closed"
            return await self._update(target, lambda state, now: state.admit(now, self.rules))
        except redis.RedisError as exc:
            self._redis_down(exc)
            return await self._local.admit(target)

    async def record(self, target: str, outcome: Outcome, retry_after_s: float | None) -> Status:
        def apply(state: BreakerState, now: float) -> Status:
            state.record(now, outcome, self.rules, retry_after_s)
            return state.status(now)

        try:
            return await self._update(target, apply)
        except redis.RedisError as exc:
            self._redis_down(exc)
            return await self._local.record(target, outcome, retry_after_s)

    async def snapshot(self) -> dict[str, dict[str, object]]:
        now, out = time.time(), {}
        async for key in self._redis.scan_iter(match=f"{PREFIX}*"):
            raw = await self._redis.get(key)
            if raw:
                target = key.decode()[len(PREFIX) :]
                out[target] = _describe(BreakerState(**json.loads(raw)), now)
        return out

    async def aclose(self) -> None:
        await self._redis.aclose()
