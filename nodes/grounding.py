"""The grounding check of generated answers: every sentence a model streams is held back until
it is complete and judged against the passages it cites; a sentence with no citation waits for
the next cited one and is judged against the passages that one cites. The first sentence that is
uncited or unsupported stops the stream for good (nothing of it leaves), and the answer is
replaced by the extractive answer or "not found" (see `nodes.generate`).

Support is judged per sentence by `support_scores`, one function whose body the learned sentence
scorer may replace: a claim is supported when its best score over the cited passages' sentences
reaches `SUPPORT_THRESHOLD`."""

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from corpus.lexical import tokenize

# The support score: cosine of the MiniLM vectors plus this share of the claim's (stemmed) words
# the sentence contains, as `select_sentences` scores relevance.
OVERLAP_WEIGHT = 0.8
# A claim is supported when one sentence of a passage it cites scores this much: the lowest
# threshold at which no SciFact train claim (0 of 505) passes on another claim's gold abstract,
# while 69% pass on their rationale sentences (`python -m scripts.calibrate_support`). Per
# sentence, 59% of rationale sentences pass and 33% of the other sentences of the same
# abstracts: the scorer tells topic apart, support within a topic only weakly.
SUPPORT_THRESHOLD = 0.75
# A piece of fewer words ("Yes.", "Sources:") states nothing to check: it goes out with the
# sentence after it, judged or not as that one is.
MIN_CLAIM_WORDS = 3

_MARKER = re.compile(r"\[(\d+)\]")
# A unit ends at . ! or ? (closing quotes, brackets and citation markers after it belong to it)
# followed by space and a character that opens no citation, or at a line break.
_UNIT_END = re.compile(r"[.!?][\"')\]*_]*(?:[ \t]*\[\d+\])*[ \t]*(?:\n\s*|[ \t]+(?=[^\s\[]))|\n\s*")
_WORD = re.compile(r"\w+")
_WORDS = re.compile(r"\S+\s*|\s+")
_MARKDOWN = re.compile(r"^\s*(?:[-*+>#]+|\d+[.)])\s+|[*_`]+")


def support_scores(
    claim: str, claim_vector: np.ndarray, sentences: list[str], vectors: np.ndarray
) -> np.ndarray:
    """How well each of `sentences` (unit `vectors`, one row each) supports `claim` (its unit
    vector): cosine plus `OVERLAP_WEIGHT` times the share of the claim's words it contains."""
    if not sentences:
        return np.zeros(0, dtype=np.float32)
    said = set(tokenize(claim))
    overlap = np.array(
        [len(said.intersection(tokenize(s))) / len(said) if said else 0.0 for s in sentences],
        dtype=np.float32,
    )
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(sentences), -1)
    return matrix @ claim_vector.astype(np.float32) + OVERLAP_WEIGHT * overlap


def claim_text(unit: str) -> str:
    """A streamed unit as a claim: citation markers and Markdown markup left out."""
    return " ".join(_MARKDOWN.sub(" ", _MARKER.sub(" ", unit)).split())


def cited(unit: str) -> list[int]:
    """The passage numbers (1-based) a unit cites, in order of first use."""
    return list(dict.fromkeys(int(n) for n in _MARKER.findall(unit)))


# The passages' sentences and their unit vectors, in passage order.
Evidence = Sequence[tuple[list[str], np.ndarray]]
Embed = Callable[[list[str]], np.ndarray]


def judge(embed: Embed, evidence: Evidence, claims: list[str], passages: list[int]) -> list[bool]:
    """Whether each claim is supported by a sentence of `passages` (0-based indexes into
    `evidence`); `embed` makes the claims' unit vectors."""
    usable = [i for i in passages if 0 <= i < len(evidence) and evidence[i][0]]
    if not claims:
        return []
    if not usable:
        return [False] * len(claims)
    sentences = [s for i in usable for s in evidence[i][0]]
    vectors = np.vstack(
        [np.asarray(evidence[i][1]).reshape(len(evidence[i][0]), -1) for i in usable]
    )
    return [
        float(support_scores(claim, vector, sentences, vectors).max()) >= SUPPORT_THRESHOLD
        for claim, vector in zip(claims, embed(claims), strict=True)
    ]


@dataclass
class GroundingGate:
    """Holds a streamed answer back unit by unit (a sentence, or a line) and releases a unit only
    once it is judged supported by a passage it, or the next cited unit, cites; `evidence` is
    the prompt's passages' sentences (computed while the model starts).

    Feed it with `feed` while `run` drains it; `close` judges what is left. The first failing
    unit sets `failed` (with `reason`), and nothing more is released."""

    embed: Embed
    evidence: "asyncio.Future[Evidence]"
    released: str = ""
    failed: bool = False
    reason: str = ""
    cited_any: bool = False
    _buffer: str = ""
    _held: list[str] = field(default_factory=list)  # complete units awaiting a cited one
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: bool = False

    def feed(self, text: str) -> None:
        """Adds streamed text (already redacted)."""
        self._buffer += text
        self._wake.set()

    async def run(self, emit: Callable[[str], None]) -> None:
        """Releases judged units to `emit` as they complete, until `close` was called and the
        rest judged."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            closing = self._closed
            units = self._complete_units(everything=closing)
            await self._settle(units, emit, closing)
            if closing or self.failed:
                return

    def close(self) -> None:
        """The stream ended: what is buffered is complete."""
        self._closed = True
        self._wake.set()

    def _complete_units(self, everything: bool) -> list[str]:
        units: list[str] = []
        start = 0
        for match in _UNIT_END.finditer(self._buffer):
            units.append(self._buffer[start : match.end()])
            start = match.end()
        self._buffer = self._buffer[start:]
        if everything and self._buffer:
            units.append(self._buffer)
            self._buffer = ""
        return units

    async def _settle(self, units: list[str], emit: Callable[[str], None], closing: bool) -> None:
        for unit in units:
            if self.failed:
                return
            self._held.append(unit)
            numbers = cited(unit)
            if not numbers:
                continue
            self.cited_any = True
            claims = self._claims()
            evidence = await self.evidence
            verdicts = await asyncio.to_thread(
                judge, self.embed, evidence, claims, [n - 1 for n in numbers]
            )
            if not all(verdicts):
                self._fail(f"not supported by the passages it cites: {numbers}")
                return
            self._release(emit)
        if closing and not self.failed:
            claims = self._claims()
            if claims or not self.cited_any:
                self._fail("no citation" if not self.cited_any else "a sentence cites nothing")
            else:  # trailing pieces that state nothing
                self._release(emit)

    def _claims(self) -> list[str]:
        claims = map(claim_text, self._held)
        return [c for c in claims if len(_WORD.findall(c)) >= MIN_CLAIM_WORDS]

    def _release(self, emit: Callable[[str], None]) -> None:
        for held in self._held:
            self.released += held
            for word in _WORDS.findall(held):  # streamed word by word, as the model wrote it
                emit(word)
        self._held = []

    def _fail(self, reason: str) -> None:
        self.failed, self.reason = True, reason
        self._held = []
