"""PII redaction with presidio-analyzer's pattern recognizers (offline, no NLP model needed)."""

from collections import Counter
from dataclasses import dataclass

import tldextract
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
)

# tldextract would fetch the Public Suffix List over the network; use its bundled snapshot.
_OFFLINE_TLDS = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class _OfflineEmailRecognizer(EmailRecognizer):
    def validate_result(self, pattern_text: str) -> bool:
        return _OFFLINE_TLDS(pattern_text).fqdn != ""


@dataclass(frozen=True)
class Redaction:
    """The redacted text and how many values of each entity type were replaced."""

    text: str
    counts: dict[str, int]


class PatternRedactor:
    """Replaces e-mail addresses, phone numbers, Luhn-valid card numbers, IBANs and IP addresses
    with `<ENTITY_TYPE>` placeholders."""

    def __init__(self, min_score: float = 0.4):
        self._min_score = min_score
        self._recognizers: list[EntityRecognizer] = [
            _OfflineEmailRecognizer(),
            PhoneRecognizer(
                supported_regions=("US", "GB", "DE", "FR", "IN", "CH", "NL", "ES", "IT")
            ),
            CreditCardRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
        ]

    def redact(self, text: str) -> Redaction:
        """Redacts every recognised value; overlapping findings keep the longest, best-scored."""
        found: list[RecognizerResult] = []
        for recognizer in self._recognizers:
            found += recognizer.analyze(text, recognizer.supported_entities, None)  # type: ignore[arg-type]
        found = [r for r in found if r.score >= self._min_score]
        found.sort(key=lambda r: (r.start, -(r.end - r.start), -r.score))
        kept: list[RecognizerResult] = []
        for result in found:
            if kept and result.start < kept[-1].end:
                continue
            kept.append(result)
        counts: Counter[str] = Counter()
        out = text
        for result in reversed(kept):
            out = f"{out[: result.start]}<{result.entity_type}>{out[result.end :]}"
            counts[result.entity_type] += 1
        return Redaction(out, dict(counts))
