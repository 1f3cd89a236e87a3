"""The output guard: the input's redaction policy applied to what goes back to clients (answers,
streamed tokens, citation snippets), and the injection screen applied to retrieved passages."""

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from graph.state import Citation, Passage
from integrations.pii import PatternRedactor, apply
from nodes.injection_rules import detect_injection

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


# A passage sentence that gives orders: one an injection rule matches, or one that tells the
# reader what to say, print or report (garak's latent injections do both).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE = r"(?:^\s*|[,;:]\s*|\b(?:and|then|please|just|simply|only)\s+)"
_DIRECTIVE = re.compile(
    r"\b(if (the )?(user|anyone|someone|you are) (asks?|asked|questioned)|if (asked|questioned)"
    r"|when asked|(reply|respond|answer) (only |simply )?with|focus (only|exclusively) on)"
    rf"|{_CLAUSE}(report|say|state) that"
    r"|\b(?:and|then|please|just|simply)\s+(report|say|output|print|reply|respond|answer)\s*:"
    # "print" as a word, not code: print("x") is Python
    rf"|{_CLAUSE}(print|output|say|repeat|write|reply|respond|provide|translate)\b(?!\()"
    r"[^.!?\n(]{0,40}[\"“<«]",
    re.IGNORECASE | re.MULTILINE,
)
# Sending the reader to a link: manuals do it too, so it counts only in a passage that an
# injection rule flags.
_SEND_TO = re.compile(r"\b(visit|go to|click|via)\s+\S*[\w-]\.[a-z]{2,}\b", re.IGNORECASE)
# What a directive asks to be said: its quoted text, its links and domains, else its tail.
_QUOTED = re.compile(r"[\"“«<]+([^\"”»<>]{4,200})[\"”»>]+|'([^'\n]{4,200})'")
# Lower-case top-level domains only: "function.We" in a run-on abstract is not a host.
_HOST = re.compile(r"\b(?:https?://)?([\w-]+(?:\.[\w-]+)*\.[a-z]{2,6})\b(?![\w-])")
_TAIL = re.compile(
    r"\b(?:print|output|say|repeat|report(?: that)?|state that|(?:reply|respond|answer)"
    r"(?: only| simply)? with)\b[:\s]+(.{6,200})",
    re.IGNORECASE,
)
# Targets are matched on their first characters: fewer than `HOLD_CHARS`, so a target is seen
# whole in the held-back text before any of it is released.
TARGET_CHARS = 32
_MIN_TARGET = 6


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def instruction_targets(passages: Iterable[Passage]) -> frozenset[str]:
    """What the instructions inside the passages ask the model to say (quoted text, the hosts of
    links, else the words after the verb), normalised (lower case,
    punctuation as spaces) and cut to `TARGET_CHARS`: an answer that says one of them followed a
    passage instead of answering the question."""
    targets: set[str] = set()
    for passage in passages:
        flagged = detect_injection(f"{passage['title']}\n{passage['text']}") is not None
        for sentence in _SENTENCE_END.split(passage["text"]):
            sends = flagged and _SEND_TO.search(sentence)
            if not (sends or _DIRECTIVE.search(sentence) or detect_injection(sentence)):
                continue
            found = [a or b for a, b in _QUOTED.findall(sentence)]
            found += _HOST.findall(sentence)
            if not found:
                found = [m.group(1) for m in _TAIL.finditer(sentence)]
            for target in found:
                norm = _norm(target)[:TARGET_CHARS].strip()
                if len(norm) >= _MIN_TARGET:
                    targets.add(norm)
    return frozenset(targets)


def follows_instruction(text: str, targets: frozenset[str]) -> bool:
    """Whether `text` says one of the passages' instruction targets."""
    norm = _norm(text)
    return any(target in norm for target in targets)


@dataclass
class StreamRedactor:
    """Redacts a token stream: holds back the last `HOLD_CHARS` characters and never cuts inside a
    found value, so the concatenated output equals the redacted whole (up to NER context).

    With `targets` (`instruction_targets` of the prompt's passages), it also stops the stream for
    good once the text says one of them (`followed`): nothing of it has been released then."""

    redactor: PatternRedactor
    hold: int = HOLD_CHARS
    counts: Counter[str] = field(default_factory=Counter)
    targets: frozenset[str] = frozenset()
    followed: bool = False
    _buffer: str = ""
    _released: str = ""

    def _check(self) -> bool:
        if self.targets and not self.followed:
            self.followed = follows_instruction(
                self._released[-self.hold :] + self._buffer, self.targets
            )
        return self.followed

    def feed(self, chunk: str) -> list[str]:
        """Adds a chunk; returns the redacted pieces (word by word) now safe to send."""
        self._buffer += chunk
        if self._check() or len(self._buffer) < self.hold + _STEP:
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
        """The redacted rest of the stream (nothing once it followed an instruction)."""
        if self._check():
            return []
        return self._release(len(self._buffer), self.redactor.find(self._buffer))

    def _release(self, cut: int, findings: list) -> list[str]:
        self._released = (self._released + self._buffer[:cut])[-self.hold :]
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
