"""The output guard: the input's redaction policy applied to what goes back to clients (answers,
streamed tokens, citation snippets), and the injection screen applied to retrieved passages."""

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from graph.state import Citation, Passage
from integrations.pii import PatternRedactor, apply
from nodes.guard import detect_injection

PassagePolicy = Literal["block", "strip", "flag"]

# Streamed text is held back this many characters, so a value still being generated (a phone
# number, an IBAN) is complete before any of it leaves; released in steps of `_STEP` characters.
HOLD_CHARS = 48
_STEP = 16
_WORDS = re.compile(r"\S+\s*|\s+")


def merge_counts(*counts: dict[str, int]) -> dict[str, int]:
    """The sum of several redaction counts."""
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(total)


def redact_citations(
    redactor: PatternRedactor, citations: Iterable[Citation]
) -> tuple[list[Citation], dict[str, int]]:
    """Citations whose snippets are redacted, and the redaction counts."""
    out: list[Citation] = []
    counts: list[dict[str, int]] = []
    for citation in citations:
        redaction = redactor.redact(citation["snippet"])
        out.append(Citation(**{**citation, "snippet": redaction.text}))
        counts.append(redaction.counts)
    return out, merge_counts(*counts)


@dataclass
class StreamRedactor:
    """Redacts a token stream: holds back the last `HOLD_CHARS` characters and never cuts inside a
    found value, so the concatenated output equals the redacted whole (up to NER context)."""

    redactor: PatternRedactor
    hold: int = HOLD_CHARS
    counts: Counter[str] = field(default_factory=Counter)
    _buffer: str = ""

    def feed(self, chunk: str) -> list[str]:
        """Adds a chunk; returns the redacted pieces (word by word) now safe to send."""
        self._buffer += chunk
        if len(self._buffer) < self.hold + _STEP:
            return []
        limit = len(self._buffer) - self.hold
        cut = max(self._buffer.rfind(" ", 0, limit), self._buffer.rfind("\n", 0, limit)) + 1
        findings = self.redactor.find(self._buffer)
        for finding in findings:
            if finding.start < cut < finding.end:
                cut = finding.start
        if cut <= 0:
            return []
        return self._release(cut, [f for f in findings if f.end <= cut])

    def flush(self) -> list[str]:
        """The redacted rest of the stream."""
        return self._release(len(self._buffer), self.redactor.find(self._buffer))

    def _release(self, cut: int, findings: list) -> list[str]:
        redaction = apply(self._buffer[:cut], findings)
        self.counts.update(redaction.counts)
        self._buffer = self._buffer[cut:]
        return _WORDS.findall(redaction.text)


@dataclass(frozen=True)
class PassageScreen:
    """Which retrieved passages try to instruct the model, and what the policy makes of them."""

    passages: list[Passage]
    injected: list[str]
    blocked: bool


def screen_passages(passages: list[Passage], policy: PassagePolicy, needed: int) -> PassageScreen:
    """Runs the guard's injection rules over the passages the answer will use: `strip` drops the
    offending ones (the next clean passage moves up), `flag` keeps them (recorded), `block`
    refuses to answer from this retrieval at all. Only the first `needed` clean passages (in rank
    order) are screened: the rules are costly and the rest never reach the model."""
    injected: list[str] = []
    clean = 0
    for passage in passages:
        if clean == needed:
            break
        if detect_injection(f"{passage['title']}\n{passage['text']}"):
            injected.append(passage["id"])
        else:
            clean += 1
    if not injected or policy == "flag":
        return PassageScreen(passages, injected, False)
    if policy == "strip":
        return PassageScreen([p for p in passages if p["id"] not in injected], injected, False)
    return PassageScreen([], injected, True)
