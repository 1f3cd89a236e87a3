"""Fake chat models (the only faked part): langchain-core's GenericFakeChatModel and variants."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk


class RecordingChatModel(GenericFakeChatModel):
    """Answers from a fixed list and records every prompt it was given."""

    prompts: list[list[BaseMessage]] = []

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.prompts.append(list(messages))
        async for chunk in super()._astream(messages, *args, **kwargs):
            yield chunk


class FailingChatModel(GenericFakeChatModel):
    """A provider that fails on every call."""

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        raise ConnectionError("provider unreachable")

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        raise ConnectionError("provider unreachable")
        yield  # pragma: no cover


class SlowChatModel(GenericFakeChatModel):
    """A provider that hangs before its first token."""

    delay_s: float = 30.0

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        await asyncio.sleep(self.delay_s)
        yield ChatGenerationChunk(message=AIMessage("too late"))  # type: ignore[arg-type]


def recording(*answers: str) -> RecordingChatModel:
    """A recording fake that answers with `answers` in turn."""
    return RecordingChatModel(messages=iter([AIMessage(a) for a in answers]), prompts=[])


def failing() -> FailingChatModel:
    return FailingChatModel(messages=iter([]))
