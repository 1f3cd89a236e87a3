"""Sentence splitting shared by ingestion, reranking and the extractive answerer."""

import re

# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or bracket;
# abbreviations such as "e.g. the" stay joined because a lower-case word follows.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[\"])")


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """Splits text into sentences; very long ones are cut at `max_chars` on a word boundary."""
    out: list[str] = []
    for raw in _SENTENCE_END.split(" ".join(text.split())):
        sentence = raw.strip()
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(sentence[:cut])
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out
