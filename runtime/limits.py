"""Per-tenant limits: requests per minute (token bucket) and LLM tokens per UTC day; per client
address: failed credential checks per minute (against guessing keys).

With `KEEL_REDIS_URL` both are shared by every replica: the bucket is refilled and spent in one
Lua script (atomic, on Redis's clock), the day's usage is an INCRBY counter. Without Redis, or
while Redis is down, each replica keeps its own in-process state (limits then apply per replica).
"""

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import redis.asyncio as redis

from graph.settings import Settings

log = logging.getLogger("keel.ratelimit")

# KEYS[1] bucket; ARGV capacity, refill tokens/s, cost (0 only looks). Returns {allowed, seconds
# until a token}.
TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - tonumber(ARGV[3])
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""
# KEYS[1] run marker, KEYS[2..] period counters; ARGV tokens, ttl s. Counts a run's usage once.
COUNT_USAGE_LUA = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  for i = 2, #KEYS do
    redis.call('INCRBY', KEYS[i], ARGV[1])
    redis.call('EXPIRE', KEYS[i], ARGV[2])
  end
end
return 1
"""
PREFIX = "keel:limits:"
DAY_S = 2 * 24 * 3600  # counters outlive their day a little, for clock skew


@dataclass
class _Bucket:
    tokens: float
    ts: float


Period = Literal["day", "minute"]


def _stamp(period: Period) -> str:
    return datetime.now(UTC).strftime("%Y%m%d" if period == "day" else "%Y%m%d%H%M")


def seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


class Limiter:
    """Token buckets and daily token counters per tenant; one per replica, built in the lifespan."""

    def __init__(self, settings: Settings):
        self.rpm, self.tokens_per_day = settings.rate_limit_rpm, settings.tokens_per_day
        self.tokens_per_minute = settings.tokens_per_minute
        self.auth_failures = settings.auth_failures_per_minute
        self._redis: Any = None
        limits = (self.rpm, self.tokens_per_day, self.tokens_per_minute, self.auth_failures)
        if settings.redis_url and any(limits):
            self._redis = redis.Redis.from_url(
                settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            self._bucket_script = self._redis.register_script(TOKEN_BUCKET_LUA)
            self._usage_script = self._redis.register_script(COUNT_USAGE_LUA)
        self._buckets: dict[str, _Bucket] = {}
        self._usage: dict[str, int] = {}
        self._counted: OrderedDict[str, None] = OrderedDict()
        self._warned = 0.0

    @property
    def enabled(self) -> bool:
        """True when a request rate or a daily token quota is configured."""
        return bool(self.rpm or self.tokens_per_day or self.tokens_per_minute)

    async def aclose(self) -> None:
        """Closes the Redis connection pool."""
        if self._redis is not None:
            await self._redis.aclose()

    def _redis_down(self, exc: Exception) -> None:
        if time.monotonic() - self._warned > 60:
            self._warned = time.monotonic()
            log.warning(
                "rate limits: redis unavailable (%s); per-replica limits until it is back",
                type(exc).__name__,
            )

    async def take(self, tenant: str) -> float:
        """Spends one request token; 0 when allowed, else seconds until the next token."""
        return await self._bucket(f"rpm:{tenant}", self.rpm, 1)

    async def auth_wait(self, address: str) -> float:
        """0 while the address may still try credentials, else seconds until it may again."""
        return await self._bucket(f"authfail:{address}", self.auth_failures, 0)

    async def auth_failed(self, address: str) -> None:
        """Spends one of the address's failed credential checks."""
        await self._bucket(f"authfail:{address}", self.auth_failures, 1)

    async def _bucket(self, key: str, per_minute: int, cost: int) -> float:
        if not per_minute:
            return 0.0
        capacity, rate = float(per_minute), per_minute / 60.0
        if self._redis is not None:
            try:
                allowed, wait = await self._bucket_script(
                    keys=[f"{PREFIX}{key}"], args=[capacity, rate, cost]
                )
                return 0.0 if int(allowed) else float(wait)
            except redis.RedisError as exc:
                self._redis_down(exc)
        now = time.monotonic()
        bucket = self._buckets.setdefault(key, _Bucket(capacity, now))
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.ts) * rate)
        bucket.ts = now
        if bucket.tokens >= 1:
            bucket.tokens -= cost
            return 0.0
        return (1 - bucket.tokens) / rate

    async def tokens_used(self, tenant: str, period: Period = "day") -> int:
        """LLM tokens the tenant's finished runs used this UTC day or minute."""
        key = f"{PREFIX}tokens:{tenant}:{_stamp(period)}"
        if self._redis is not None:
            try:
                return int(await self._redis.get(key) or 0)
            except redis.RedisError as exc:
                self._redis_down(exc)
        return self._usage.get(key, 0)

    async def count_usage(self, tenant: str, run_id: str, usage: dict[str, Any]) -> None:
        """Adds a finished run's tokens to the tenant's day and minute, once per run (replays
        don't count)."""
        if not (self.tokens_per_day or self.tokens_per_minute):
            return
        tokens = int(usage.get("input_tokens", 0) or 0) + int(usage.get("output_tokens", 0) or 0)
        keys = [f"{PREFIX}tokens:{tenant}:{_stamp(p)}" for p in ("day", "minute")]
        if self._redis is not None:
            try:
                await self._usage_script(
                    keys=[f"{PREFIX}run:{run_id}", *keys], args=[tokens, DAY_S]
                )
                return
            except redis.RedisError as exc:
                self._redis_down(exc)
        if run_id in self._counted:
            return
        self._counted[run_id] = None
        if len(self._counted) > 100_000:
            self._counted.popitem(last=False)
        for key in keys:
            self._usage[key] = self._usage.get(key, 0) + tokens
