"""The long-lived clients handed to nodes, built once per process and closed in reverse order."""

from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel

from corpus import Corpora, open_corpora
from graph.settings import Settings
from integrations.cache_stores import CacheStore, RedisCacheStore, SqliteCacheStore
from integrations.llm import LLMChain, build_chat_models
from integrations.pii import PatternRedactor
from integrations.rerank import LearnedReranker, Reranker
from integrations.semantic_index import SemanticIndexes


@dataclass
class Deps:
    """Everything a node needs that outlives one run."""

    settings: Settings
    corpora: Corpora
    redactor: PatternRedactor
    cache: CacheStore
    reranker: Reranker
    llm: LLMChain

    @classmethod
    def from_settings(
        cls, settings: Settings, chat_models: list[BaseChatModel] | None = None
    ) -> "Deps":
        """Builds every client from settings; `chat_models` overrides the configured chain."""
        models = build_chat_models(settings) if chat_models is None else chat_models
        scopes, batch = settings.cache_index_scopes, settings.cache_sync_batch
        cache: CacheStore = (
            RedisCacheStore(
                settings.redis_url,
                indexes=SemanticIndexes("0-0", scopes, batch),
                max_questions=settings.cache_max_questions,
            )
            if settings.redis_url
            else SqliteCacheStore(
                settings.data_dir / "cache.sqlite", SemanticIndexes("0", scopes, batch)
            )
        )
        return cls(
            settings=settings,
            corpora=open_corpora(settings),
            redactor=PatternRedactor(names=settings.pii_names),
            cache=cache,
            reranker=LearnedReranker(depth=settings.rerank_depth),
            llm=LLMChain.from_settings(settings, models),
        )

    async def aclose(self) -> None:
        """Closes what holds connections."""
        await self.cache.aclose()
        await self.llm.aclose()
        self.corpora.close()
