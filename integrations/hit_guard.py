"""The semantic cache's false-hit guard: two similar questions share an answer only if they
agree on what embeddings blur (negation, polarity, numbers, dates, units, names, comparatives).

Each rule extracts a signature from both questions; any rule whose signatures differ makes the
candidate a miss. Missing a paraphrase costs one graph run; a false hit serves a wrong answer.
"""

import difflib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import Stemmer

from integrations.lexicon import wordnet

GREEK = "\u03b1-\u03c9\u0391-\u03a9"
APOSTROPHES = "'\u2019"
WORD = re.compile(rf"[A-Za-z{GREEK}][\w{APOSTROPHES}{GREEK}-]*|\d+(?:[.,]\d+)*")
NEGATORS = frozenset(
    "not no never none nor neither without cannot nothing nobody nowhere lack lacks lacking "
    "absent absence fail fails failed unable incapable unrelated independent".split()
)
# Opposite prefixes: "safe" vs "unsafe", "effective" vs "ineffective", "toxic" vs "non-toxic".
ANTONYM_PREFIXES = ("un", "in", "im", "ir", "il", "dis", "non-", "non", "anti-", "anti")
# (axis, direction) for word prefixes: synonyms share a direction, antonyms differ.
DIRECTION_STEMS = {
    "up": "increas rais elevat boost enhanc promot upregulat up-regulat augment accelerat "
    "amplif stimulat activat upmodulat exacerbat heighten caus induc trigger rise rises rising rose greater larger bigger "
    "higher highest more most maxim gain longer faster stronger extend prolong",
    "down": "decreas reduc lower lowest diminish declin drop suppress inhibit downregulat "
    "down-regulat downmodulat antagoniz counteract impair attenuat less least fewer smaller minim fall falls falling fell loss "
    "lose loses weaken slow block blunt deplet shrink lessen mitigat alleviat shorter weaker "
    "shorten curb prevent avert",
}
VALENCE_STEMS = {
    "good": "benefi protect safe helpful help improv better best good positive favo advantag",
    "bad": "harm risk damag detriment worse worst bad poor negative advers toxic danger hazard "
    "disadvantag",
}
ORDER_STEMS = {
    "before": "before prior earlier preced pre-",
    "after": "after later following subsequent post-",
}
QUANTITY_WORDS = {
    "all": "all every always each entire universal",
    "some": "some sometimes occasional partial rarely seldom few several",
}
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "half": "0.5",
    "quarter": "0.25",
    "twice": "2x",
    "double": "2x",
    "triple": "3x",
    "first": "1st",
    "second": "2nd",
    "third": "3rd",
}
UNITS = {
    "mg": "mg milligram milligrams",
    "g": "g gram grams",
    "kg": "kg kilogram kilograms kilo kilos",
    "ug": "ug µg mcg microgram micrograms",
    "ml": "ml millilitre milliliter millilitres milliliters",
    "l": "l litre liter litres liters",
    "mmol": "mmol millimole millimoles",
    "iu": "iu",
    "mm": "mm millimetre millimeter millimetres millimeters",
    "cm": "cm centimetre centimeter centimetres centimeters",
    "m": "metre meter metres meters",
    "km": "km kilometre kilometer kilometres kilometers",
    "mmhg": "mmhg",
    "kcal": "kcal calorie calories",
    "c": "celsius",
    "f": "fahrenheit",
    "s": "seconds sec secs",
    "min": "min minute minutes",
    "h": "h hr hrs hour hours hourly",
    "day": "day days daily",
    "week": "week weeks weekly",
    "month": "month months monthly",
    "year": "year years yearly annual annually",
    "bpm": "bpm",
    "ms": "ms millisecond milliseconds",
    "mb": "mb megabyte megabytes",
    "gb": "gb gigabyte gigabytes",
    "kb": "kb kilobyte kilobytes",
}
UNIT_OF = {word: unit for unit, words in UNITS.items() for word in words.split()}
MONTHS = (
    "january february march april may june july august september october november december".split()
)
DATE_WORDS = frozenset(
    MONTHS
    + "monday tuesday wednesday thursday friday saturday sunday yesterday today tomorrow "
    "tonight spring summer autumn winter".split()
)
# Who a question is about: a swap ("in men" / "in women") is an entity swap too.
POPULATIONS = {
    "men": "men man male males boys boy",
    "women": "women woman female females girls girl pregnant pregnancy",
    "children": "children child infants infant newborns newborn neonates pediatric paediatric "
    "adolescents adolescent kids",
    "elderly": "elderly older aged seniors",
    "mice": "mice mouse murine",
    "rats": "rats rat",
    "adults": "adults adult",
    "humans": "humans human patients patient",
}
POPULATION_OF = {w: group for group, words in POPULATIONS.items() for w in words.split()}
NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
UNIT_SPLIT = re.compile(r"^(\d+(?:[.,]\d+)*)([a-zµ]+)$")


# Opposite words that embeddings place close together; a swap is a polarity mismatch.
OPPOSITES = [
    tuple(pair.split("/"))
    for pair in "client/server input/output upload/download read/write start/stop open/close "
    "enable/disable allow/deny accept/reject success/failure true/false inside/outside "
    "internal/external upper/lower left/right acute/chronic benign/malignant "
    "systolic/diastolic agonist/antagonist import/export synthesis/degradation vivo/vitro "
    "dominant/recessive oral/intravenous sync/async encrypt/decrypt public/private "
    "send/receive request/response ingestion/deletion ingest/delete insert/delete "
    "add/remove create/delete import/export first/last".split()
]


# Words that carry no claim of their own: a swap of only these is never a different question.
FRAME_WORDS = frozenset(
    "a an and are as at be been being but by can could did do does for from has have had how in "
    "into is it its of on or that the their there these this those to was were which with what "
    "when where who whom whose why will would should may might must shall than then so such also "
    "any about if very while during".split()
)
# Short forms spelled out before any rule compares words ("min" = "minimum", but "5 min" stays a
# unit): a shortened word is the same word, not a swap or a name.
ABBREVIATIONS = dict(
    pair.split("=")
    for pair in "min=minimum max=maximum avg=average approx=approximately config=configuration "
    "configs=configurations env=environment envs=environments db=database dbs=databases "
    "temp=temporary tmp=temporary docs=documentation doc=document info=information "
    "repo=repository repos=repositories dir=directory dirs=directories app=application "
    "apps=applications auth=authentication admin=administrator dev=development "
    "prod=production pkg=package lib=library libs=libraries msg=message msgs=messages "
    "num=number stats=statistics spec=specification specs=specifications req=request "
    "reqs=requests param=parameter params=parameters arg=argument args=arguments "
    "var=variable vars=variables perf=performance impl=implementation".split()
)
# Time phrases said in one word, so "prior to" is "before" to the order rule, not a new word.
TIME_PHRASES = {
    ("prior", "to"): "before",
    ("ahead", "of"): "before",
    ("in", "advance", "of"): "before",
    ("subsequent", "to"): "after",
    ("as", "soon", "as"): "after",
}
# "once the client disconnects" is "after ...", "run it once" is not: a clause must follow.
CLAUSE_STARTS = frozenset(
    "the a an it i you we they he she this that these those my your our their its all every "
    "each".split()
)
POSSESSIVE = re.compile(rf"[{APOSTROPHES}]s$", re.IGNORECASE)
# Common synonyms a one-word swap may use and stay the same question (compared by group);
# WordNet's (`integrations.lexicon`) come on top of these.
SYNONYMS = [
    group.split()
    for group in (
        "start starts started begin begins began commence initiate",
        "affect affects influence influences impact impacts",
        "work works effective efficacious efficacy",
        "need needs require requires required",
        "stop stops discontinue discontinued cease halt quit",
        "run conduct conducted carried",
        "link linked association associated related correlated",
        "common frequent prevalent widespread",
        "show shows display exhibit demonstrate",
        "use used using take taking",
        "drug drugs medication medications medicine medicines",
        "sign indicator indicate indicates marker",
        "above over exceeding",
        "below under",
    )
]
SYNONYM_OF = {word: n for n, group in enumerate(SYNONYMS) for word in group}
# The two sides of a comparison: "A more than B" and "B more than A" are different questions.
COMPARISON_WORDS = frozenset("than compared versus vs relative".split())
_stem = Stemmer.Stemmer("english").stemWord
_AXIS_STEMS = tuple(
    stem
    for axis in (DIRECTION_STEMS, VALENCE_STEMS, ORDER_STEMS)
    for stems in axis.values()
    for stem in stems.split()
)
_QUANTITIES = frozenset(w for words in QUANTITY_WORDS.values() for w in words.split())


@dataclass(frozen=True)
class Question:
    """A question cut into the pieces the rules compare."""

    text: str
    words: tuple[str, ...]  # lower-cased tokens, numbers split from glued units
    cased: tuple[str, ...]  # the same tokens as written


def _spelled_out(tokens: list[str]) -> list[str]:
    """Abbreviations spelled out (not a unit after a number) and time phrases in one word."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        lower = [t.lower() for t in tokens[i : i + 3]]
        phrase = next((p for p in TIME_PHRASES if tuple(lower[: len(p)]) == p), None)
        measured = bool(out) and (out[-1][:1].isdigit() or out[-1].lower() in NUMBER_WORDS)
        if phrase is not None:
            out.append(TIME_PHRASES[phrase])
            i += len(phrase)
            continue
        if lower[0] == "once" and lower[1:2] and lower[1] in CLAUSE_STARTS:
            out.append("after")
        elif lower[0] in ABBREVIATIONS and not (measured and lower[0] in UNIT_OF):
            out.append(ABBREVIATIONS[lower[0]])
        else:
            out.append(tokens[i])
        i += 1
    return out


def parse(text: str) -> Question:
    """Tokenises a question in a normal form: "5mg" becomes "5", "mg"; a possessive loses its
    "'s" ("Heron's team" / "the Heron team"); abbreviations and time phrases are spelled out."""
    cased: list[str] = []
    spelled = re.sub(
        r"°\s*([CcFf])\b", lambda m: " celsius " if m.group(1) in "Cc" else " fahrenheit ", text
    )
    for token in WORD.findall(spelled):
        glued = UNIT_SPLIT.match(token.lower())
        if glued and token[0].isdigit():
            cased.extend([glued.group(1), glued.group(2)])
        else:
            cased.append(POSSESSIVE.sub("", token).strip(APOSTROPHES + "-"))
    for _ in range(text.count("%")):
        cased.append("%")
    cased = _spelled_out([c for c in cased if c])
    return Question(text, tuple(c.lower() for c in cased), tuple(cased))


def _stem_axis(words: Iterable[str], stems: dict[str, str]) -> frozenset[str]:
    table = {name: tuple(s.split()) for name, s in stems.items()}
    return frozenset(
        name for w in words for name, prefixes in table.items() if w.startswith(prefixes)
    )


def negation(q: Question) -> object:
    """Whether the question is negated ("not", "no", "-n't", "without", ...)."""
    return any(w in NEGATORS or w.endswith(("n't", "n\u2019t")) for w in q.words)


def polarity(q: Question) -> object:
    """Good/bad valence words and prefixed antonyms (safe/unsafe is compared pairwise)."""
    return _stem_axis(q.words, VALENCE_STEMS)


def comparatives(q: Question) -> object:
    """Direction (increase/decrease, more/less), order (before/after), quantity (all/some)."""
    words = q.words
    return (
        _stem_axis(words, DIRECTION_STEMS),
        _stem_axis(words, ORDER_STEMS),
        frozenset(n for n, ws in QUANTITY_WORDS.items() if set(ws.split()) & set(words)),
    )


def numbers(q: Question) -> object:
    """Numbers in digits or words, normalised ("1,000" = "1000", "five" = "5", "50%" = "half")."""
    out = set()
    percent = "%" in q.words or "percent" in q.words
    for w in q.words:
        for part in w.split("-"):
            if NUMBER.fullmatch(part):
                value = float(part.replace(",", ""))
                out.add(f"{value / 100 if percent else value:g}")
            elif part in NUMBER_WORDS:
                out.add(NUMBER_WORDS[part])
    return frozenset(out)


def dates(q: Question) -> object:
    """Months, weekdays, seasons and relative days; years are compared as numbers."""
    return frozenset(w for w in q.words if w in DATE_WORDS and not _modal_may(q, w))


def _modal_may(q: Question, word: str) -> bool:
    """ "may" is a month only when written "May"."""
    return word == "may" and "May" not in q.cased


def units(q: Question) -> object:
    """Units of measure after a number ("5 mg", "40 mg/day"), by canonical name."""
    out, measured = set(), False
    for w in q.words:
        if w in UNIT_OF:
            if measured:  # stays measured: "40 mg/day" is one measure
                out.add(UNIT_OF[w])
            continue
        measured = w[:1].isdigit() or w in NUMBER_WORDS
    return frozenset(out)


def entities(q: Question) -> frozenset[str]:
    """Names: capitalised words after the first, acronyms, letter-digit codes (IL-6, BRCA1),
    populations (men/women, mice/humans)."""
    out = set()
    for i, token in enumerate(q.cased):
        lower = token.lower()
        if lower in POPULATION_OF:
            out.add(POPULATION_OF[lower])
        elif lower in UNIT_OF or lower in DATE_WORDS or lower in NUMBER_WORDS:
            continue
        elif any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
            out.add(lower)
        elif token == "I":  # the pronoun, not a name
            continue
        elif sum(c.isupper() for c in token) >= 2 or (i > 0 and token[0].isupper()):
            out.add(lower)
    return frozenset(out)


def _light(word: str) -> bool:
    """A word the other rules already compare, or one with no content of its own."""
    return (
        word in FRAME_WORDS
        or word in NEGATORS
        or word.startswith(_AXIS_STEMS)
        or word in _QUANTITIES
        or word in NUMBER_WORDS
        or word in UNIT_OF
        or word in DATE_WORDS
        or word in POPULATION_OF
        or word[:1].isdigit()
    )


def _worded(q: Question) -> tuple[str, ...]:
    return tuple(_stem(w) for w in q.words if w not in FRAME_WORDS)


def _reordered(a: Question, b: Question) -> bool:
    """The same words around a comparison in another order ("A more effective than B" / "B more
    effective than A"), or counts that trade what they count. Different words, or a passive
    ("A is compared with B by C"), are not."""
    if _counts_exchanged(a, b):
        return True
    wa, wb = _worded(a), _worded(b)
    if Counter(wa) != Counter(wb) or ("by" in a.words) != ("by" in b.words):
        return False
    ca, cb = (bool(COMPARISON_WORDS & set(q.words)) for q in (a, b))
    return ca != cb or (ca and wa != wb)


def _counted(q: Question) -> dict[str, str]:
    """What each count counts: the next content word after a number or "many"/"much"."""
    counts = {}
    for i, w in enumerate(q.words):
        if w[:1].isdigit() or w in NUMBER_WORDS or w in ("many", "much"):
            after = [x for x in q.words[i + 1 :] if x not in FRAME_WORDS]
            if after:
                counts[NUMBER_WORDS.get(w, w)] = _stem(after[0])
    return counts


def _counts_exchanged(a: Question, b: Question) -> bool:
    """Two counts that count each other's thing in the other question ("How many replicas can
    share one database?" / "How many databases can one replica use?")."""
    ca, cb = _counted(a), _counted(b)
    return any(
        cb.get(n) not in (None, thing) and thing in cb.values() and ca.get(m) == cb[n]
        for n, thing in ca.items()
        for m in ca
        if m != n and cb.get(m) == thing
    )


def _same_word(x: str, y: str) -> bool:
    """Spelling or inflection variants ("tumor"/"tumour", "pregnancy"/"pregnant"), synonyms."""
    return (
        _stem(x) == _stem(y)
        or difflib.SequenceMatcher(None, x, y).ratio() >= 0.75
        or _synonyms(x, y)
    )


def _synonyms(x: str, y: str) -> bool:
    return (x in SYNONYM_OF and SYNONYM_OF[x] == SYNONYM_OF.get(y)) or wordnet().synonyms(x, y)


def _swapped(a: Question, b: Question) -> bool:
    """The two questions differ in at most two places, and in one of them a content word takes
    the place of an unrelated one ("in apoptosis" / "in differentiation", "enables" /
    "represses"): the shape of a contrast, whose words embeddings place close. A paraphrase
    rewords more places, or swaps only synonyms, variants and words other rules compare."""
    ops = [
        op
        for op in difflib.SequenceMatcher(None, a.words, b.words, autojunk=False).get_opcodes()
        if op[0] != "equal"
    ]
    if len(ops) > 2:
        return False
    edited_a = {w for _, i1, i2, _, _ in ops for w in a.words[i1:i2] if w not in FRAME_WORDS}
    edited_b = {w for _, _, _, j1, j2 in ops for w in b.words[j1:j2] if w not in FRAME_WORDS}
    if edited_a & edited_b:
        return False  # a word moved: the question was reworded, not one word swapped
    changes = []
    for _, i1, i2, j1, j2 in ops:
        xs, ys = a.words[i1:i2], b.words[j1:j2]
        only_a = [x for x in xs if not _light(x) and not any(_same_word(x, y) for y in ys)]
        only_b = [y for y in ys if not _light(y) and not any(_same_word(y, x) for x in xs)]
        if only_a or only_b:
            changes.append((only_a, only_b))
    return len(changes) == 1 and all(changes[0])


RULES: dict[str, Callable[[Question], object]] = {
    "negation": negation,
    "polarity": polarity,
    "comparatives": comparatives,
    "numbers": numbers,
    "dates": dates,
    "units": units,
    "entities": entities,
}
# Rules that compare the two questions' wording rather than a signature of each.
PAIRWISE: dict[str, Callable[[Question, Question], bool]] = {
    "order": _reordered,
    "swap": _swapped,
}
ALL_RULES = (*RULES, *PAIRWISE)


def _antonym_prefixed(a: Question, b: Question) -> str | None:
    """A word of one question that is another word of the other with an opposite prefix, or
    its opposite (client/server, or in WordNet)."""
    for x, y in ((a, b), (b, a)):
        xs, ys = set(x.words), set(y.words)
        for first, second in OPPOSITES:
            if first in xs - ys and second in ys - xs:
                return first
        for w in xs - ys:
            for prefix in ANTONYM_PREFIXES:
                if w.startswith(prefix) and w[len(prefix) :] in ys - xs:
                    return w
    # Opposites WordNet knows ("buy" / "sell", "wet" / "dry"), among words no other rule compares.
    only_a = [w for w in set(a.words) - set(b.words) if not _light(w)]
    only_b = [w for w in set(b.words) - set(a.words) if not _light(w)]
    return next((x for x in only_a for y in only_b if wordnet().antonyms(x, y)), None)


def _entities_disagree(a: Question, b: Question) -> bool:
    # A name written in lower case in the other question ("Aspirin" / "aspirin") still agrees.
    ea, eb = entities(a), entities(b)
    wa, wb = set(a.words) | ea, set(b.words) | eb
    return not (ea <= wb and eb <= wa) or {e for e in ea if e in POPULATIONS} != {
        e for e in eb if e in POPULATIONS
    }


def disagreement(a: str, b: str, rules: Iterable[str] = ALL_RULES) -> str | None:
    """The first rule on which the two questions disagree, or None when they agree on all."""
    qa, qb = parse(a), parse(b)
    for rule in rules:
        if rule == "entities":
            if _entities_disagree(qa, qb):
                return "entities"
            continue
        if rule == "polarity" and _antonym_prefixed(qa, qb):
            return "polarity"
        if rule in PAIRWISE:
            if PAIRWISE[rule](qa, qb):
                return rule
            continue
        if RULES[rule](qa) != RULES[rule](qb):
            return rule
    return None


def same_words(a: str, b: str) -> bool:
    """Whether each content word of either question is one of the other's once normalised:
    spelled out, inflected or a synonym ("the avg request" / "the average requests")."""
    qa, qb = parse(a), parse(b)
    wa, wb = ([w for w in q.words if w not in FRAME_WORDS] for q in (qa, qb))

    def matched(x: str, ys: list[str]) -> bool:
        return any(x == y or _stem(x) == _stem(y) or _synonyms(x, y) for y in ys)

    return all(matched(x, wb) for x in wa) and all(matched(y, wa) for y in wb)


def refusal(
    a: str,
    b: str,
    similarity: float,
    threshold: float,
    rules: Iterable[str] = ALL_RULES,
    same_words_threshold: float = 1.0,
) -> str | None:
    """Why `b`'s cached answer may not serve `a`: "similarity" (below `threshold`, or below
    `same_words_threshold` when the two are worded with the same words: the embedding reads
    "avg" and "average" apart), the first guard rule they disagree on, or None when it may."""
    if similarity < threshold and (similarity < same_words_threshold or not same_words(a, b)):
        return "similarity"
    return disagreement(a, b, rules)
