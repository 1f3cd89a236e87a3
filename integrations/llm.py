"""OpenAI-compatible chat models (OpenAI, vLLM, Ollama, llama.cpp) through langchain-openai."""

from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from graph.settings import Settings


def build_chat_models(settings: Settings) -> list[BaseChatModel]:
    """The provider chain, primary first; empty when no endpoint or key is configured."""
    if not settings.llm_configured:
        return []
    models = [settings.llm_model]
    if settings.llm_fallback_model:
        models.append(settings.llm_fallback_model)
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed"
    return [
        ChatOpenAI(
            model=name,
            base_url=settings.llm_base_url,
            api_key=api_key,  # type: ignore[arg-type]
            timeout=settings.llm_timeout_s,
            max_retries=0,  # the graph's RetryPolicy and fallback decide, not the client
            max_tokens=settings.llm_max_tokens,  # type: ignore[call-arg]
            streaming=True,
            stream_usage=True,
            temperature=0,
        )
        for name in models
    ]
