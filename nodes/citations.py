"""Citations of a generated answer checked against the passages it was given: markers to
numbers that were not given are dropped, the rest renumbered [1], [2]... in order of first use."""

import re
from dataclasses import dataclass

from langchain_core.messages import AIMessage

from graph.state import Citation, Passage

_CITATION = re.compile(r"\[(\d+)\]")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([.,;:!?])")


@dataclass(frozen=True)
class CheckedCitations:
    """The answer with its markers renumbered, its citations, and the numbers dropped."""

    answer: str
    citations: list[Citation]
    dropped: list[int]

    @property
    def degraded(self) -> list[str]:
        """The reason to record in `degraded` when markers were dropped (none otherwise)."""
        return [f"citations_dropped: {self.dropped}"] if self.dropped else []


def check_citations(answer: str, passages: list[Passage]) -> CheckedCitations:
    """Renumbers an answer's [n] markers contiguously by first use; a marker pointing at no given
    passage is removed from the text and listed in `dropped`."""
    renumber: dict[int, int] = {}
    citations: list[Citation] = []
    dropped: list[int] = []

    def replace(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if not 1 <= n <= len(passages):
            if n not in dropped:
                dropped.append(n)
            return ""
        if n not in renumber:
            renumber[n] = len(renumber) + 1
            p = passages[n - 1]
            citations.append(
                Citation(n=renumber[n], id=p["id"], source=p["source"], snippet=p["text"][:300])
            )
        return f"[{renumber[n]}]"

    text = _CITATION.sub(replace, answer)
    if dropped:  # "skipped [9]." leaves "skipped ." behind
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", text).strip()
    return CheckedCitations(text, citations, dropped)


def answer_message(answer: str, citations: list[Citation]) -> AIMessage:
    """The thread's message for an answer, its citations kept beside it (`response_metadata`,
    never sent back to a model), so a resumed thread can show every answer's sources."""
    return AIMessage(answer, response_metadata={"citations": citations})
