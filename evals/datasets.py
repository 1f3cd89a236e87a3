"""Evaluation datasets: BEIR directories (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`)
and a simple JSONL of `{question, answer?, relevant_ids?}` for user datasets."""

import csv
import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from corpus import Document
from corpus.loaders import load_paths
from graph.errors import InvalidInput


@dataclass(frozen=True)
class EvalQuery:
    """One question with what a good run should find.

    `relevant` maps document ids to graded relevance; `evidence` lists annotated evidence
    sentences as (document id, sentence index) pairs, when the dataset has them.
    """

    id: str
    question: str
    answer: str | None = None
    relevant: dict[str, float] = field(default_factory=dict)
    evidence: tuple[tuple[str, int], ...] = ()


@dataclass
class EvalDataset:
    """Queries plus, for BEIR, the corpus they are judged against (None: use the live corpus)."""

    name: str
    queries: list[EvalQuery]
    documents: list[Document] | None = None
    split: str | None = None

    def fingerprint(self) -> str:
        """A short digest of the corpus content: the isolated collection's name derives from it."""
        digest = hashlib.sha256()
        for doc in self.documents or []:
            digest.update(f"{doc.id}\x00{doc.title}\x00{doc.text}\x01".encode())
        return digest.hexdigest()[:10]

    def sample(self, n: int, seed: int = 0) -> "EvalDataset":
        """A fixed random sample of `n` queries (same seed, same sample), in dataset order."""
        if n >= len(self.queries):
            return self
        keep = set(random.Random(seed).sample(range(len(self.queries)), n))
        chosen = [q for i, q in enumerate(self.queries) if i in keep]
        return EvalDataset(self.name, chosen, self.documents, self.split)

    def head(self, n: int) -> "EvalDataset":
        """The first `n` queries."""
        return EvalDataset(self.name, self.queries[:n], self.documents, self.split)

    def without_relevant(self) -> "EvalDataset":
        """The dataset with every query's judged documents taken out of its corpus: what an
        answerer should then say is "not found" (abstention)."""
        judged = {doc for q in self.queries for doc in q.relevant}
        kept = [d for d in self.documents or [] if d.id not in judged]
        return EvalDataset(f"{self.name}-without-relevant", self.queries, kept, self.split)

    def folds(self, k: int) -> list[int]:
        """Each query's fold of `k` for cross-validation (`grouped_folds` of what each
        query's judged documents are)."""
        return grouped_folds([q.relevant for q in self.queries], k)

    def with_distractors(self, docs: list[Document]) -> "EvalDataset":
        """The dataset with unrelated documents added to its corpus (ids must not collide)."""
        return EvalDataset(self.name, self.queries, [*(self.documents or []), *docs], self.split)


def _jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise InvalidInput(f"{path}:{number}: not JSON: {exc}") from exc
                if not isinstance(row, dict):
                    raise InvalidInput(f"{path}:{number}: expected a JSON object")
                yield row


def read_qrels(path: Path) -> dict[str, dict[str, float]]:
    """A BEIR qrels TSV (`query-id corpus-id score`, header optional) as query -> doc -> score."""
    qrels: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = float(row[2])
    return qrels


def _evidence(metadata: object) -> tuple[tuple[str, int], ...]:
    """SciFact-style metadata `{doc_id: [{"sentences": [i, ...], "label": ...}]}` to pairs."""
    if not isinstance(metadata, dict):
        return ()
    pairs: set[tuple[str, int]] = set()
    for doc_id, annotations in metadata.items():
        if isinstance(annotations, list):
            for annotation in annotations:
                if isinstance(annotation, dict):
                    pairs.update((str(doc_id), int(i)) for i in annotation.get("sentences", []))
    return tuple(sorted(pairs))


def grouped_folds(documents: Sequence[Iterable[str]], k: int) -> list[int]:
    """Each item's fold of `k` for cross-validation, items that share a document (of
    `documents`, one collection per item) always in one fold, the folds as even in size as those
    groups allow. SciFact writes a claim and its negation from one abstract: split apart, a
    model learns the test claims' documents from the training ones (SciFact train, reranker
    nDCG@10 0.741 over folds by claim, 0.732 grouped)."""
    parent = list(range(len(documents)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for n, docs in enumerate(documents):
        for doc in docs:
            parent[root(n)] = root(first.setdefault(doc, n))
    groups: dict[int, list[int]] = {}
    for n in range(len(documents)):
        groups.setdefault(root(n), []).append(n)
    fold, sizes = [0] * len(documents), [0] * k
    for members in sorted(groups.values(), key=lambda m: (-len(m), m[0])):
        smallest = sizes.index(min(sizes))
        for n in members:
            fold[n] = smallest
        sizes[smallest] += len(members)
    return fold


def load_beir(path: Path, split: str = "train") -> EvalDataset:
    """A BEIR dataset directory; only queries judged in `qrels/<split>.tsv` are kept."""
    qrels_path = path / "qrels" / f"{split}.tsv"
    for needed in (path / "corpus.jsonl", path / "queries.jsonl", qrels_path):
        if not needed.exists():
            raise InvalidInput(
                f"{needed}: missing (BEIR layout: corpus.jsonl, queries.jsonl, qrels/)"
            )
    documents = [
        Document(
            id=str(row["_id"]),
            text=str(row.get("text") or ""),
            title=str(row.get("title") or ""),
            source=str(row["_id"]),
        )
        for row in _jsonl(path / "corpus.jsonl")
    ]
    qrels = read_qrels(qrels_path)
    queries = [
        EvalQuery(
            id=str(row["_id"]),
            question=str(row["text"]),
            relevant=qrels[str(row["_id"])],
            evidence=_evidence(row.get("metadata")),
        )
        for row in _jsonl(path / "queries.jsonl")
        if str(row["_id"]) in qrels
    ]
    return EvalDataset(name=path.name, queries=queries, documents=documents, split=split)


def load_questions(path: Path, corpus: list[Path] | None = None) -> EvalDataset:
    """A JSONL of `{question, answer?, relevant_ids?, id?}`; `corpus` files are ingested with it,
    else the questions run against the configured (live) collection."""
    queries = []
    for number, row in enumerate(_jsonl(path), start=1):
        if not str(row.get("question") or "").strip():
            raise InvalidInput(f"{path}:{number}: missing question")
        relevant = row.get("relevant_ids") or []
        queries.append(
            EvalQuery(
                id=str(row.get("id", number)),
                question=str(row["question"]),
                answer=row.get("answer"),
                relevant={str(d): 1.0 for d in relevant},
            )
        )
    documents = None
    if corpus:
        documents = load_paths(corpus)
    return EvalDataset(name=path.stem, queries=queries, documents=documents)


def load_dataset(path: Path, split: str = "train", corpus: list[Path] | None = None) -> EvalDataset:
    """A BEIR directory or a questions JSONL file, by what `path` is."""
    if path.is_dir():
        return load_beir(path, split)
    if path.suffix.lower() == ".jsonl":
        return load_questions(path, corpus)
    raise InvalidInput(f"{path}: expected a BEIR directory or a .jsonl file of questions")


def subset_corpus(dataset: EvalDataset, distractors: int, seed: int = 0) -> EvalDataset:
    """The dataset with its corpus cut to the queries' relevant documents plus a fixed, seeded
    random sample of `distractors` other documents (for fast regression gates)."""
    documents = dataset.documents or []
    relevant = {doc for q in dataset.queries for doc in q.relevant}
    others = [d for d in documents if d.id not in relevant]
    rng = random.Random(seed)
    chosen = {d.id for d in rng.sample(others, min(distractors, len(others)))}
    kept = [d for d in documents if d.id in relevant or d.id in chosen]
    return EvalDataset(dataset.name, dataset.queries, kept, dataset.split)


def abstract_sentences(text: str) -> list[str]:
    """An abstract's sentences for mapping answers to annotated evidence indexes (BEIR joins
    SciFact's sentences with spaces, sometimes with none: `split_sentences` splits both)."""
    from integrations.text import split_sentences

    return split_sentences(text, max_chars=100_000)


def distractor_documents(paths: list[Path]) -> tuple[list[Document], list[str]]:
    """Every document under `paths` as a distractor (ids prefixed `distractor:`, so no judged
    id can collide), and the files skipped, each with its reason (a page without text, say)."""
    from corpus.loaders import iter_paths, load_file

    docs: list[Document] = []
    skipped: list[str] = []
    for path in paths:
        for src in iter_paths([path], path if path.is_dir() else path.parent):
            try:
                loaded = list(load_file(src.path, src.name))
            except (InvalidInput, OSError, ValueError) as exc:
                skipped.append(f"{src.path}: {str(exc).removeprefix(f'{src.name}: ')}")
                continue
            docs += [replace(doc, id=f"distractor:{path.name}/{doc.id}") for doc in loaded]
    return docs, skipped
