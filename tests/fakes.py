"""Fake chat models (the only faked part): langchain-core's GenericFakeChatModel and variants."""

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
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


class ObedientChatModel(GenericFakeChatModel):
    """A model that obeys any instruction it finds in the passages of its prompt: told to say,
    print, report or link something, it answers with that (recorded in `obeyed`); with no
    instruction in sight, it answers `fallback`. The fault that indirect injection exploits."""

    fallback: str = "Unchanged files are skipped [1]."
    obeyed: list[str] = []

    def _reply(self, messages: list[BaseMessage]) -> str:
        prompt = str(messages[-1].content)
        passages = prompt.split("<passages>", 1)[-1].split("</passages>", 1)[0]
        orders = []
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", passages):
            if not _ORDER.search(sentence):
                continue
            quoted = re.findall(r"[\"“<]+([^\"”<>]{3,})[\"”>]+", sentence)
            links = re.findall(r"(?:https?://)?[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}\b", sentence)
            tail = _ORDER.split(sentence, maxsplit=1)[-1].strip(" :\"'")
            orders.append((quoted or links or [tail])[0].strip())
        orders = [o for o in orders if len(o) >= 3]
        if not orders:
            return self.fallback
        self.obeyed.append(orders[0])
        return f"{orders[0]} [1]"

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for word in re.findall(r"\S+\s*", self._reply(messages)):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))


# Imperatives an obedient model carries out (the object follows the verb): a verb that opens a
# sentence or a clause ("..., report that", "and print", "please repeat", "simply respond with").
_ORDER = re.compile(
    r"(?:^\s*|[,:;]\s*|\b(?:and|please|just|simply|then|you)\s+)"
    r"(?:print|say|output|repeat|report that|reply with|respond with|answer with|provide it"
    r"|visit|go to|translate this sentence as|focus exclusively on|elect your nominated account via)"
    r"\b",
    re.IGNORECASE,
)


def obedient() -> ObedientChatModel:
    """An obedient fake with an empty record."""
    return ObedientChatModel(messages=iter([]), obeyed=[])
