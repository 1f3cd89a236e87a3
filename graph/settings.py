"""Deployment settings, read once from the environment (prefix `KEEL_`)."""

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every deployment knob of keel. Per-run knobs live in `graph.context.Context`."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".keel")
    database_url: str = Field(
        default="", description="memory://, sqlite:///path or postgresql://...; default SQLite"
    )
    durability: Literal["sync", "async", "exit"] = "async"

    chroma_url: str | None = None
    collection: str = "keel"
    redis_url: str | None = None
    cache_ttl_s: int = 24 * 3600

    chunk_size: int = 1200
    chunk_overlap: int = 150
    embed_batch_size: int = 16

    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("KEEL_LLM_API_KEY", "OPENAI_API_KEY")
    )
    llm_model: str = "gpt-4o-mini"
    llm_fallback_model: str | None = None
    llm_timeout_s: float = 30.0
    llm_max_tokens: int = 512

    rerank_timeout_s: float = 2.0
    guard_policy: Literal["block", "flag"] = "block"

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 64 * 1024 * 1024
    max_message_chars: int = 8000
    sse_ping_s: float = 15.0

    @property
    def checkpoint_url(self) -> str:
        """The checkpointer URL, defaulting to a SQLite file under `data_dir`."""
        return self.database_url or f"sqlite:///{self.data_dir / 'checkpoints.sqlite'}"

    @property
    def llm_configured(self) -> bool:
        """True when an OpenAI-compatible endpoint or key is configured."""
        return bool(self.llm_base_url or self.llm_api_key)
