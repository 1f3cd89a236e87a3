"""The evaluation runner: ingest a dataset's corpus into an isolated collection, run every query
through the real compiled graph (in-memory checkpointer), score, and write the results."""

import asyncio
import hashlib
import json
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from evals import metrics
from evals.configs import EVAL_SETTINGS, EvalConfig
from evals.datasets import EvalDataset, EvalQuery, abstract_sentences
from graph.builder import FALLBACK, GENERATE, RERANK, RETRIEVE, build_graph
from graph.deps import Deps
from graph.settings import Settings

RANK_KS = (1, 5, 10)
STAGE_NODES = (RETRIEVE, RERANK)
_ANSWER_SENTENCE = re.compile(r"\s*(.+?)\s*\[(\d+)\]")
JUDGE_PROMPT = (
    "You check answers for faithfulness. Passages:\n{passages}\n\nQuestion: {question}\n"
    "Answer: {answer}\n\nIs every statement of the answer supported by the passages? "
    "Reply with one word: yes or no."
)


@dataclass
class IngestInfo:
    """How the isolated collection was prepared."""

    collection: str
    documents: int = 0
    chunks_added: int = 0
    reused: bool = True
    seconds: float = 0.0


@dataclass
class ConfigRun:
    """One configuration's per-query rows and its summary."""

    config: EvalConfig
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    ingest: IngestInfo | None = None


def collection_name(dataset: EvalDataset, settings: Settings) -> str:
    """The isolated collection for a dataset's corpus under a chunking configuration: a changed
    corpus or chunking gets a fresh collection, an unchanged one is reused."""
    slug = re.sub(r"[^a-z0-9]+", "_", dataset.name.lower()).strip("_")[:24] or "dataset"
    material = f"{dataset.fingerprint()}:{settings.chunk_size}:{settings.chunk_overlap}"
    return f"eval_{slug}_{hashlib.sha256(material.encode()).hexdigest()[:8]}"


def eval_settings(
    base: Settings, dataset: EvalDataset, overrides: dict[str, Any], data_dir: Path | None = None
) -> Settings:
    """Settings for an eval run: overrides applied, the eval data dir, the isolated collection."""
    values = {**base.model_dump(), **EVAL_SETTINGS, **overrides}
    if data_dir is not None:
        values["data_dir"] = data_dir
    # The isolated collection lives whole in the eval data dir: a chunk store shared with a
    # server (Postgres) would say "unchanged" about documents this dir's indexes never saw.
    values |= {"corpus_url": "", "lexical_dir": None, "chroma_url": None}
    settings = Settings.model_validate(values)
    if dataset.documents is not None:
        settings = settings.model_copy(update={"collection": collection_name(dataset, settings)})
    return settings


def prepare_corpus(deps: Deps, dataset: EvalDataset, show_progress: bool = False) -> IngestInfo:
    """Ingests the dataset's corpus (unchanged documents are skipped) and warms the lexical index."""
    info = IngestInfo(collection=deps.settings.collection)
    corpus = deps.corpora.get()
    if dataset.documents is None:
        corpus.refresh()
        return info
    started = time.perf_counter()
    bar = progress_bar(show_progress, None, "ingest (chunks)")
    last = [0]

    def tick(done: int) -> None:
        if bar is not None:
            bar.update(done - last[0])
        last[0] = done

    report = corpus.ingest(dataset.documents, progress=tick)
    if bar is not None:
        bar.close()
    corpus.refresh()
    info.documents, info.chunks_added = report.documents, report.chunks_added
    info.reused = report.chunks_added == 0
    info.seconds = round(time.perf_counter() - started, 2)
    return info


def progress_bar(show: bool, total: int | None, desc: str) -> Any:
    """A tqdm bar on stderr when `show` and stderr is a terminal (a bar's carriage returns
    would only garble a log file), else None."""
    if not show or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="q" if total else "chunk", leave=True)


async def run_query(
    graph: Any, query: EvalQuery, config: EvalConfig, use_cache: bool
) -> dict[str, Any]:
    """One query through the compiled graph; node timings from the `tasks` stream."""
    thread = {"configurable": {"thread_id": f"eval-{uuid.uuid4().hex}"}}
    context = config.build_context(
        user_message=query.question, **({"use_cache": True} if use_cache else {})
    )
    started_at: dict[str, float] = {}
    timings: dict[str, float] = {}
    first_stage: list[str] = []
    errors: dict[str, str] = {}
    begin = time.perf_counter()
    async for event in graph.astream(
        {"messages": []}, thread, context=context, stream_mode="tasks"
    ):
        name = event.get("name", "")
        if "result" in event:
            timings[name] = round(
                (time.perf_counter() - started_at.pop(event["id"], begin)) * 1000, 3
            )
            if event.get("error"):
                errors[name] = str(event["error"])
            if name == RETRIEVE:
                result = dict(event.get("result") or {})
                first_stage = [p["id"] for p in result.get("passages", [])]
        else:
            started_at[event["id"]] = time.perf_counter()
    timings["total"] = round((time.perf_counter() - begin) * 1000, 3)
    state = (await graph.aget_state(thread)).values
    passages = state.get("passages", []) or []
    return {
        "config": config.name,
        "query_id": query.id,
        "question": query.question,
        "retrieved": [[p["id"], p["score"]] for p in passages],
        "first_stage": first_stage,
        "answer": state.get("answer", ""),
        "citations": state.get("citations", []),
        "model": state.get("model"),
        "cached": bool(state.get("cached")),
        "found": state.get("found", True),
        "degraded": state.get("degraded", []),
        "fallback": state.get("fallback"),
        "timings_ms": timings,
        "node_errors": errors,
        "_passages": passages,
    }


def _answer_evidence(
    answer: str, cited_docs: dict[int, str], sentences_of: Callable[[str], list[str]]
) -> set[tuple[str, int]]:
    """The (doc id, sentence index) pairs an extractive answer quotes, by matching its sentences
    to the sentences of the documents their [n] citations (`cited_docs`: n -> doc id) point at."""
    chosen: set[tuple[str, int]] = set()
    for match in _ANSWER_SENTENCE.finditer(answer):
        text, doc_id = " ".join(match.group(1).split()), cited_docs.get(int(match.group(2)))
        if doc_id is None:
            continue
        sentences = [" ".join(s.split()) for s in sentences_of(doc_id)]
        hits = [i for i, s in enumerate(sentences) if s and (s in text or text in s)]
        if not hits:
            words = set(text.lower().split())
            overlaps = [
                (
                    len(words & set(s.lower().split()))
                    / max(len(words | set(s.lower().split())), 1),
                    i,
                )
                for i, s in enumerate(sentences)
            ]
            best = max(overlaps, default=(0.0, -1))
            hits = [best[1]] if best[0] >= 0.5 else []
        chosen.update((doc_id, i) for i in hits)
    return chosen


def score_row(
    row: dict[str, Any],
    query: EvalQuery,
    top_k: int,
    sentences_of: Callable[[str], list[str]] | None,
) -> None:
    """Adds ranking, evidence and citation metrics to a result row (in place)."""
    docs = metrics.doc_ranking(pid for pid, _ in row["retrieved"])
    row["doc_ranking"] = docs[:100]
    scores: dict[str, float | None] = {}
    if query.relevant:
        rel = query.relevant
        scores["ndcg@10"] = metrics.ndcg_at_k(docs, rel, 10)
        scores["recall@10"] = metrics.recall_at_k(docs, rel, 10)
        scores["recall@100"] = metrics.recall_at_k(docs, rel, 100)
        scores["mrr@10"] = metrics.mrr_at_k(docs, rel, 10)
        for k in RANK_KS:
            scores[f"hit@{k}"] = metrics.hit_at_k(docs, rel, k)
    given = min(top_k, len(row["_passages"]))
    faith = metrics.citation_faithfulness(row["answer"], given) if not row["cached"] else {}
    scores.update({f"citation_{k}": v for k, v in faith.items()})
    if query.evidence and sentences_of is not None and row["model"] == "extractive":
        doc_of = {p["id"]: p["doc_id"] for p in row["_passages"][:given]}
        cited_docs = {c["n"]: doc_of[c["id"]] for c in row["citations"] if c["id"] in doc_of}
        selected = _answer_evidence(row["answer"], cited_docs, sentences_of)
        precision, recall = metrics.evidence_precision_recall(selected, query.evidence)
        scores["evidence_precision"], scores["evidence_recall"] = precision, recall
        row["evidence_selected"] = sorted(selected)
    row["metrics"] = {k: round(v, 6) for k, v in scores.items() if v is not None}


async def judge_answer(deps: Deps, row: dict[str, Any], top_k: int) -> float | None:
    """LLM-judged faithfulness (1.0 supported, 0.0 not), or None when the judge fails."""
    if not deps.llm.models or not row["answer"]:
        return None
    numbered = "\n".join(
        f"[{n}] {p['text'][:1500]}" for n, p in enumerate(row["_passages"][:top_k], start=1)
    )
    prompt = JUDGE_PROMPT.format(passages=numbered, question=row["question"], answer=row["answer"])
    try:
        reply = await deps.llm.models[0].ainvoke(prompt)
    except Exception:
        return None
    return 1.0 if str(reply.content).strip().lower().startswith("yes") else 0.0


def summarize(config: EvalConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means of every metric, latency percentiles per node and end to end, and rates."""
    names = sorted({k for r in rows for k in r.get("metrics", {})})
    means = {
        name: round(metrics.mean([r["metrics"][name] for r in rows if name in r["metrics"]]), 4)
        for name in names
    }
    counts = {name: sum(1 for r in rows if name in r["metrics"]) for name in names}
    nodes = sorted({n for r in rows for n in r["timings_ms"]})
    latency = {
        node: {
            k: round(v, 2)
            for k, v in metrics.latency_summary(
                [r["timings_ms"][node] for r in rows if node in r["timings_ms"]]
            ).items()
        }
        for node in nodes
    }
    stage = [sum(r["timings_ms"].get(n, 0.0) for n in STAGE_NODES) for r in rows]
    latency["retrieve+rerank"] = {k: round(v, 2) for k, v in metrics.latency_summary(stage).items()}
    return {
        "config": config.name,
        "knobs": config.describe(),
        "queries": len(rows),
        "metrics": means,
        "metric_counts": counts,
        "latency_ms": latency,
        "rates": {
            "cache_hit": round(metrics.rate([r["cached"] for r in rows]), 4),
            "fallback": round(metrics.rate([FALLBACK in r["timings_ms"] for r in rows]), 4),
            "degraded": round(metrics.rate([bool(r["degraded"]) for r in rows]), 4),
            "rerank_skipped": round(
                metrics.rate(
                    [any(d.startswith("rerank_skipped") for d in r["degraded"]) for r in rows]
                ),
                4,
            ),
            # Answered "not found" (with --without-relevant: the abstention rate).
            "not_found": round(metrics.rate([not r.get("found", True) for r in rows]), 4),
            "answered_by_generate": round(
                metrics.rate(
                    [GENERATE in r["timings_ms"] and FALLBACK not in r["timings_ms"] for r in rows]
                ),
                4,
            ),
        },
    }


async def evaluate_config(
    dataset: EvalDataset,
    config: EvalConfig,
    base_settings: Settings,
    *,
    data_dir: Path | None = None,
    use_cache: bool = False,
    judge: bool = False,
    show_progress: bool = False,
    deps_factory: Callable[[Settings], Deps] | None = None,
) -> ConfigRun:
    """Runs one configuration over every query with fresh clients (no warm caches carried over
    from another configuration, so latencies compare fairly)."""
    settings = eval_settings(base_settings, dataset, config.settings, data_dir)
    deps = (deps_factory or Deps.from_settings)(settings)
    run = ConfigRun(config)
    try:
        run.ingest = await asyncio.to_thread(prepare_corpus, deps, dataset, show_progress)
        graph = build_graph(deps, checkpointer=InMemorySaver())
        top_k = config.build_context().top_k
        texts = {d.id: d.text for d in dataset.documents or []}
        sentence_cache: dict[str, list[str]] = {}

        def sentences_of(doc_id: str) -> list[str]:
            if doc_id not in sentence_cache:
                sentence_cache[doc_id] = abstract_sentences(texts.get(doc_id, ""))
            return sentence_cache[doc_id]

        bar = progress_bar(show_progress, len(dataset.queries), config.name)
        for query in dataset.queries:
            row = await run_query(graph, query, config, use_cache)
            score_row(row, query, top_k, sentences_of if texts else None)
            if judge:
                verdict = await judge_answer(deps, row, top_k)
                if verdict is not None:
                    row["metrics"]["judge_faithful"] = verdict
            row.pop("_passages")
            run.rows.append(row)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        await deps.aclose()
    run.summary = summarize(config, run.rows)
    run.summary["ingest"] = run.ingest.__dict__ if run.ingest else None
    return run


async def evaluate(
    dataset: EvalDataset,
    configs: list[EvalConfig],
    base_settings: Settings | None = None,
    *,
    out_dir: Path | None = None,
    data_dir: Path | None = None,
    use_cache: bool = False,
    judge: bool = False,
    show_progress: bool = False,
    plots: bool = True,
) -> list[ConfigRun]:
    """Evaluates every configuration; with `out_dir`, writes results, summary, report and plots."""
    from langsmith import tracing_context

    base = base_settings or Settings()
    data_dir = data_dir if data_dir is not None else base.data_dir / "eval"
    runs = []
    # Tracing stays off during runs: only an explicit `--langsmith` upload reaches the network.
    with tracing_context(enabled=False):
        for config in configs:
            runs.append(
                await evaluate_config(
                    dataset,
                    config,
                    base,
                    data_dir=data_dir,
                    use_cache=use_cache,
                    judge=judge,
                    show_progress=show_progress,
                )
            )
            if out_dir is not None:  # partial results survive an interrupted comparison
                write_outputs(out_dir, dataset, runs, plots=False)
    if out_dir is not None:
        write_outputs(out_dir, dataset, runs, plots=plots)
    return runs


def write_outputs(
    out_dir: Path, dataset: EvalDataset, runs: list[ConfigRun], plots: bool = True
) -> None:
    """results.jsonl, summary.json, report.md, answers.md (with annotated evidence) and
    (optionally) the PNG plots."""
    from evals.report import gold_evidence, render_answers, render_report, write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "results.jsonl").open("w", encoding="utf-8") as handle:
        for run in runs:
            for row in run.rows:
                handle.write(json.dumps(row, default=str) + "\n")
    summary = {
        "dataset": dataset.name,
        "split": dataset.split,
        "queries": len(dataset.queries),
        "configs": [run.summary for run in runs],
    }
    (out_dir / "summary.json").write_text(
        json.dumps(summary, indent=2, default=str), encoding="utf-8"
    )
    images = write_plots(out_dir, runs) if plots else []
    (out_dir / "report.md").write_text(render_report(summary, images), encoding="utf-8")
    texts = {d.id: d.text for d in dataset.documents or []}
    evidence = gold_evidence(dataset.queries, lambda doc: abstract_sentences(texts.get(doc, "")))
    if evidence and runs:
        answers = render_answers(runs[0].rows, evidence)
        (out_dir / "answers.md").write_text(answers, encoding="utf-8")
