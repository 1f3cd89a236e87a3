"""Deployment settings, read once from the environment (prefix `KEEL_`)."""

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from integrations.hit_guard import ALL_RULES

# Tenants name store namespaces (no dots allowed there) and cache/rate-limit keys.
TENANT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class Settings(BaseSettings):
    """Every deployment knob of keel. Per-run knobs live in `graph.context.Context`."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".keel")
    database_url: str = Field(
        default="", description="memory://, sqlite:///path or postgresql://...; default SQLite"
    )
    durability: Literal["sync", "async", "exit"] = "async"
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "reject"
    run_lease_s: float = 10.0
    run_heartbeat_s: float = 1.0
    run_max_attempts: int = 3
    # Retention (0 keeps everything): newest N checkpoints per thread, event logs younger than
    # T seconds, and a sliding window of the last M messages of a thread.
    retention_checkpoints: int = 0
    retention_events_s: float = 0
    history_max_messages: int = 0
    # Seconds between sweeps for threads whose TTL has passed (0: never swept).
    thread_ttl_sweep_s: float = 60.0
    store_index_fields: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="value fields the Agent Server store embeds for semantic search when a "
        "put names no index; comma-separated",
    )

    chroma_url: str | None = None
    corpus_url: str = Field(
        default="",
        description="the chunk store: postgresql://... shared by replicas (may be the "
        "database_url), or sqlite:///path; default SQLite under data_dir",
    )
    lexical_dir: Path | None = Field(
        default=None,
        description="the BM25 index's folder (default: <data_dir>/lexical); replicas share it, "
        "so with several hosts it is a shared volume",
    )
    collection: str = "keel"
    redis_url: str | None = None
    cache_ttl_s: int = 24 * 3600

    chunk_size: int = 1200
    chunk_overlap: int = 150
    embed_batch_size: int = 16
    embed_threads: int = Field(
        default=0,
        ge=0,
        description="ONNX threads per batch embedding call (ingestion, sentence vectors); 0: "
        "one per core, fastest on an idle machine. A single text (a question) always runs on "
        "one thread: faster for ~15 tokens, and the server's other core stays free",
    )
    dense_head_tokens: int = Field(
        default=32,
        description="tokens of a document's head (title, then text) that make its dense vector",
    )
    sentence_vectors: Literal["lazy", "eager"] = Field(
        default="lazy",
        description="embed chunk sentences (for rerank and extractive answers) in the background "
        "of `keel serve` (until then a query embeds the few that static vectors pick), or all "
        "at ingestion (several times slower ingestion)",
    )
    rerank_depth: int = Field(default=20, description="fused candidates the reranker re-scores")
    abstain_relevance: float = Field(
        default=0.5,
        description="the extractive answer's best sentence must reach this relevance (cosine + "
        '0.8 x share of the question\'s words), else the answer is "not found"; tune it with '
        "`keel eval --without-relevant` on your own questions",
    )

    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("KEEL_LLM_API_KEY", "OPENAI_API_KEY")
    )
    llm_model: str = "gpt-4o-mini"
    llm_fallback_model: str | None = None
    llm_max_tokens: int = 512

    rerank_timeout_s: float = 2.0
    guard_policy: Literal["block", "flag"] = "block"
    guard_passage_policy: Literal["block", "strip", "flag"] = Field(
        default="strip",
        description="retrieved passages that try to instruct the model: block the answer, "
        "strip the passage, or flag it and keep it",
    )
    pii_names: bool = Field(
        default=False,
        description="also redact person and place names (local spaCy NER); off by default "
        "because the small model mistakes gene and drug names for people",
    )
    encryption_key: SecretStr | None = Field(
        default=None, description="AES key (16, 24 or 32 bytes; raw, hex or base64) for checkpoints"
    )
    encryption_old_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="retired keys, comma-separated, still accepted for reading (rotation)",
    )

    host: str = "127.0.0.1"
    port: int = 8000
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="`keel serve`'s logs: JSON lines (with trace ids), text, or auto (text on a "
        "terminal, JSON otherwise)",
    )
    max_body_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = Field(
        default=8 * 1024,
        description="total request header bytes above which a request gets 431; kept under "
        "uvicorn's own 16 KiB request-head limit (h11), which answers a bare 400",
    )

    # Identity: with none of these set the server is single-tenant ("default") and unauthenticated.
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="JSON map of sha256(api key) in hex -> tenant; never the clear key",
    )
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 shared secret")
    jwt_public_key_file: Path | None = Field(
        default=None, description="PEM file of RS256 public keys (several blocks for rotation)"
    )
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = Field(default=30.0, description="clock skew allowed on exp/nbf/iat")
    allow_unauthenticated: bool = Field(
        default=False,
        description="let `keel serve` bind a non-loopback host with no authentication configured",
    )
    # Per-tenant limits (0 disables): requests per minute (token bucket, shared through Redis
    # when KEEL_REDIS_URL is set) and LLM tokens per UTC day, counted from finished runs' usage.
    rate_limit_rpm: int = Field(default=0, ge=0)
    tokens_per_day: int = Field(default=0, ge=0)
    auth_failures_per_minute: int = Field(
        default=10,
        ge=0,
        description="failed credential checks allowed per client address and minute; past it "
        "the address gets 429 until the bucket refills, valid credentials included (0: off)",
    )
    max_message_chars: int = 8000
    sse_ping_s: float = 15.0
    # Run webhooks (Agent Server API, runtime/webhooks.py).
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="seconds a webhook delivery may take (retried once)"
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="let runs name webhooks on loopback, private or link-local addresses",
    )

    # LLM resilience (integrations/llm.py LLMChain, integrations/breakers.py): three timeouts,
    # one retry owner with a budget, and the run's total deadline.
    llm_connect_timeout_s: float = 2.0
    llm_first_token_timeout_s: float = Field(
        default=8.0, description="seconds from the request to the model's first text"
    )
    llm_idle_timeout_s: float = Field(
        default=15.0, description="seconds between two pieces of text (empty deltas don't count)"
    )
    llm_max_retries: int = Field(default=2, ge=0, description="retries per call before failover")
    llm_allowed_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="models a run may ask for (context.model) besides the configured ones; "
        "comma-separated",
    )
    llm_retry_budget_ratio: float = Field(
        default=0.2, ge=0, description="retries in 10 s at most this share of calls, plus reserve"
    )
    llm_retry_budget_reserve: int = Field(default=3, ge=0)
    llm_hedge: bool = Field(
        default=False,
        description="race a late first token (over max(p95 of the last 100, 1 s)) with the "
        "next healthy model; the first token wins",
    )
    llm_hedge_ratio: float = Field(default=0.05, ge=0, description="hedges at most this share")
    grounding_check: bool = Field(
        default=True,
        description="hold each generated sentence until a passage it cites supports it; an "
        "uncited or unsupported answer is replaced by the extractive one",
    )
    llm_context_window: int = Field(
        default=8192,
        description="the model's window: passages are trimmed to fit it minus llm_max_tokens",
    )
    run_deadline_s: float = Field(
        default=45.0, description="a run's total time: retrieve, rerank and generate share it"
    )
    drain_timeout: float = Field(
        default=20.0, description="seconds a SIGTERM'd replica lets running runs finish"
    )
    tokens_per_minute: int = Field(
        default=0, ge=0, description="LLM tokens per tenant and minute (0: off)"
    )

    # Clients of a running server (`keel chat`, `ingest`, `docs`): where it is, the key to send.
    url: str | None = Field(
        default=None,
        description="the server `keel chat`, `keel ingest` and `keel docs` talk to; default "
        "http://127.0.0.1:<port> (ingest and docs: when a keel server answers there)",
    )
    api_key: SecretStr | None = Field(
        default=None, description="sent as X-API-Key by `keel chat`, `keel ingest`, `keel docs`"
    )

    # Semantic cache (issue 10): a paraphrase of an earlier question (same tenant, corpus version
    # and answer settings) reuses its answer when similar enough and the false-hit guard agrees.
    cache_semantic: bool = Field(default=True, description="look up paraphrases, not only exact")
    cache_similarity: float = Field(
        default=0.85, ge=0, le=1, description="cosine similarity a paraphrase candidate needs"
    )
    # The degradation ladder's "cached" rung (issue 13): with the LLM down, a guarded candidate
    # this similar that cites a passage of the run serves before the documents-only answer.
    cache_fallback_similarity: float = Field(
        default=0.80,
        ge=0,
        le=1,
        description="cosine similarity a cached answer needs when the LLM is unavailable",
    )
    # Issue 26: an embedding reads "avg" and "average" apart; the same words once normalised
    # (spelled out, inflected, WordNet synonyms) are a paraphrase at a lower similarity.
    cache_same_words_similarity: float = Field(
        default=0.75,
        ge=0,
        le=1,
        description="cosine similarity enough for a question worded with the same words",
    )
    cache_candidates: int = Field(default=4, ge=1, description="nearest questions checked")
    cache_guard_rules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "negation",
            "polarity",
            "comparatives",
            "numbers",
            "dates",
            "units",
            "entities",
            "order",
            "swap",
        ],
        description="false-hit guard rules a candidate must pass, comma-separated",
    )
    cache_index_scopes: int = Field(
        default=16, ge=1, description="scopes (tenant x corpus version) kept indexed per replica"
    )
    cache_sync_batch: int = Field(
        default=5000, ge=1, description="cached questions a lookup indexes at most from the store"
    )
    cache_max_questions: int = Field(
        default=100_000, ge=1, description="questions kept per scope in Redis (oldest trimmed)"
    )

    # Deployment: the startup check refuses pool_max x workers x replicas > max_connections - 10.
    pool_max: int = Field(default=10, description="Postgres connections per worker's pool")
    workers: int = Field(default=1, description="server worker processes per replica")
    replicas: int = Field(default=1, description="replicas sharing the database (startup check)")

    @field_validator(
        "encryption_old_keys",
        "llm_allowed_models",
        "cache_guard_rules",
        "store_index_fields",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cache_guard_rules")
    @classmethod
    def _check_rules(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ALL_RULES))
        if unknown:
            raise ValueError(f"unknown cache guard rules {unknown}; known: {sorted(ALL_RULES)}")
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_key_hashes(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for digest, tenant in value.items():
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ValueError("KEEL_API_KEYS maps sha256 hex digests (64 hex chars) to tenants")
            if not re.fullmatch(TENANT_PATTERN, tenant):
                raise ValueError(f"tenant {tenant!r} must match {TENANT_PATTERN}")
            out[digest.lower()] = tenant
        return out

    @property
    def auth_configured(self) -> bool:
        """True when API keys or JWT verification keys are configured."""
        return bool(self.api_keys or self.jwt_secret or self.jwt_public_key_file)

    @property
    def server_url(self) -> str:
        """The URL clients use: `url`, else the loopback address on `port`."""
        return self.url or f"http://127.0.0.1:{self.port}"

    @property
    def corpus_store_url(self) -> str:
        """Where the corpus's chunks live: `corpus_url`, else SQLite under `data_dir` (beside
        the checkpoints, not in their file: ingestion writes in bulk)."""
        return self.corpus_url or f"sqlite:///{self.data_dir / 'corpus.sqlite'}"

    @property
    def lexical_path(self) -> Path:
        """The lexical index's folder: `lexical_dir`, else under `data_dir`."""
        return self.lexical_dir or self.data_dir / "lexical"

    @property
    def checkpoint_url(self) -> str:
        """The checkpointer URL, defaulting to a SQLite file under `data_dir`."""
        return self.database_url or f"sqlite:///{self.data_dir / 'checkpoints.sqlite'}"

    @property
    def llm_configured(self) -> bool:
        """True when an OpenAI-compatible endpoint or key is configured."""
        return bool(self.llm_base_url or self.llm_api_key)
