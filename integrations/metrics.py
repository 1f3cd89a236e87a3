"""Prometheus metrics of a replica, named by Prometheus's own conventions (base units, `_seconds`,
`_total`), checked by `promtool check metrics` in the suite.

Labels are bounded sets only (route templates, nodes, outcomes, configured models): never a
tenant, user, thread or run. With several worker processes, set `PROMETHEUS_MULTIPROC_DIR` to an
empty directory shared by the workers; `/metrics` then aggregates them (prometheus-client's
multiprocess mode).
"""

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets in seconds, from a cache hit (~5 ms) to a slow LLM answer (~30 s).
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FAST_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

HTTP_DURATION = Histogram(
    "keel_http_request_duration_seconds",
    "HTTP requests by route template, method and status (to the end of the response)",
    ["route", "method", "status"],
    buckets=SECONDS,
)
RUNS = Counter("keel_runs_total", "Runs that ended, by outcome", ["outcome"])
RUN_DURATION = Histogram(
    "keel_run_duration_seconds", "Run execution time, by outcome", ["outcome"], buckets=SECONDS
)
RUNS_PENDING = Gauge(
    "keel_runs_pending", "Runs waiting for a replica (all replicas)", multiprocess_mode="max"
)
RUNS_RUNNING = Gauge(
    "keel_runs_running", "Runs executing on this replica", multiprocess_mode="livesum"
)
FIRST_EVENT = Histogram(
    "keel_sse_first_event_seconds",
    "From a streaming request to its first SSE event",
    buckets=SECONDS,
)
SSE_ACTIVE = Gauge(
    "keel_sse_streams_active", "Open SSE streams on this replica", multiprocess_mode="livesum"
)
STREAM_RESUMES = Counter(
    "keel_stream_resumes_total", "Reconnects with Last-Event-ID, by result", ["result"]
)
NODE_DURATION = Histogram(
    "keel_node_duration_seconds", "Graph node time, by node", ["node"], buckets=SECONDS
)
EVENT_APPEND = Histogram(
    "keel_event_log_append_duration_seconds",
    "Time to commit one batch of events to the durable run log",
    buckets=FAST_SECONDS,
)
CACHE_LOOKUPS = Counter(
    "keel_cache_lookups_total", "Answer-cache lookups, by result and kind", ["result", "kind"]
)
GUARD_BLOCKS = Counter(
    "keel_guard_blocked_total",
    "Questions the guard refused (nothing retrieved, no LLM call), by reason",
    ["reason"],
)
FOLLOWED_INSTRUCTIONS = Counter(
    "keel_guard_followed_instructions_total",
    "Answers withheld because they did what an instruction inside a passage said",
)
UNGROUNDED_ANSWERS = Counter(
    "keel_ungrounded_answers_total",
    "Generated answers replaced because a sentence cited nothing or was not supported",
)
ANSWERS = Counter(
    "keel_answers_total",
    "Answers by service level (full, no_rerank, cached, documents_only): degraded answers by mode",
    ["service_level"],
)
LLM_FIRST_TOKEN = Histogram(
    "keel_llm_time_to_first_token_seconds",
    "From an LLM request to its first text",
    ["model"],
    buckets=SECONDS,
)
LLM_DURATION = Histogram(
    "keel_llm_request_duration_seconds",
    "LLM request time, by model and outcome",
    ["model", "outcome"],
    buckets=SECONDS,
)
LLM_REQUESTS = Counter(
    "keel_llm_requests_total",
    "LLM requests (attempts) by model and outcome (success, failure, timeout, rate_limited, "
    "client_error)",
    ["model", "outcome"],
)
LLM_TOKENS = Counter(
    "keel_llm_tokens_total",
    "LLM tokens by model and direction (input, output)",
    ["model", "direction"],
)
LLM_RETRIES = Counter("keel_llm_retries_total", "LLM retries, by model", ["model"])
LLM_HEDGES = Counter("keel_llm_hedges_total", "Hedged LLM requests, by model", ["model"])
BREAKER_STATE = Gauge(
    "keel_llm_breaker_state",
    "Circuit breaker state as last seen by this replica: 0 closed, 1 half-open, 2 open",
    ["model"],
    multiprocess_mode="max",
)
BREAKER_LEVEL = {"closed": 0, "half_open": 1, "open": 2}
DB_POOL = Gauge(
    "keel_db_pool_connections",
    "Checkpoint database pool connections, by state (open, idle, waiting requests)",
    ["state"],
    multiprocess_mode="livesum",
)
REDIS_POOL = Gauge(
    "keel_redis_pool_connections",
    "Redis pool connections of the cache store, by state (open, idle)",
    ["state"],
    multiprocess_mode="livesum",
)
