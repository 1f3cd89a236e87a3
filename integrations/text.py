"""Sentence splitting shared by ingestion, reranking and the extractive answerer."""

import re

# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or bracket;
# abbreviations such as "e.g. the" stay joined because a lower-case word follows.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[\"])")
# Text joined without a space ("drugs.Ninety-four", "EF.Allogeneic", "(95.4%).Last",
# "chemotherapy.DNA", common in scraped abstracts) ends one too; an initial ("U.S.") does not,
# as a one-letter capital is not followed by a letter or digit. On SciFact train this put 1,003 of
# the 1,025 annotated evidence sentences inside their abstract's split (923 before).
_GLUED_END = re.compile(r"(?<=[a-zA-Z0-9)%\]][.!?])(?=[A-Z][A-Za-z0-9])")


# Blank lines and Markdown heading lines end a sentence; heading lines are not sentences.
_BLOCK_BREAK = re.compile(r"\n[ \t]*\n|^[ \t]{0,3}#{1,6}[ \t][^\n]*$", re.MULTILINE)


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """Splits text into sentences; very long ones are cut at `max_chars` on a word boundary."""
    out: list[str] = []
    for block in _BLOCK_BREAK.split(text):
        out.extend(_split_block(" ".join(block.split()), max_chars))
    return out


def _split_block(text: str, max_chars: int) -> list[str]:
    out: list[str] = []
    for raw in (part for piece in _SENTENCE_END.split(text) for part in _GLUED_END.split(piece)):
        sentence = raw.strip()
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(sentence[:cut])
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out
