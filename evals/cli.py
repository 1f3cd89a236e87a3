"""`keel eval`: offline evaluation runs over a dataset, through the compiled graph.

`add_eval_parser(subparsers)` registers the subcommand; the `keel` CLI wires it in.
"""

import argparse
import asyncio
import json
import sys
from pathlib import Path

from evals.cache_pairs import load_pairs, pairs_report, score_pairs
from evals.configs import NAMED, configurations
from graph.errors import KeelError
from graph.settings import Settings
from integrations.embeddings import MiniLMEmbedder


def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers `eval` on an argparse subparsers object; `args.func(args)` returns an exit code."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate retrieval and answers on a dataset",
        description=(
            "Ingests the dataset's corpus into an isolated collection (reused when unchanged), runs "
            "every query through the compiled graph and writes results.jsonl, summary.json, "
            "report.md and PNG plots."
        ),
    )
    parser.add_argument(
        "--pairs",
        type=Path,
        default=None,
        help="instead of a dataset: a JSONL of question pairs {a, b, hit} scored by the semantic "
        "cache's decision (paraphrase hit rate, false-hit rate); writes <out>/cache_pairs.json",
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="a BEIR directory (corpus.jsonl, queries.jsonl, qrels/) or a JSONL of "
        "{question, answer?, relevant_ids?}",
    )
    parser.add_argument("--split", default="train", help="BEIR qrels split (default: train)")
    parser.add_argument(
        "--corpus",
        type=Path,
        action="append",
        help="documents to ingest with a questions JSONL (repeatable); without it, "
        "the questions run against the configured collection",
    )
    parser.add_argument(
        "--with-corpus",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="add the documents of DIR (repeatable) to the evaluated corpus as distractors, to "
        "measure retrieval at scale (e.g. the SciFact claims among a manual's chunks)",
    )
    parser.add_argument(
        "--without-relevant",
        action="store_true",
        help="take every query's judged documents out of the corpus: the not_found rate is "
        "then how often keel abstains when the answer is absent",
    )
    parser.add_argument(
        "--config",
        default=None,
        help=f"a named configuration ({', '.join(NAMED)}) or key=value;key=value",
    )
    parser.add_argument(
        "--compare",
        default=None,
        help="comma-separated configurations to run in one go, e.g. "
        "dense,bm25,hybrid,hybrid+rerank",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a per-run knob (top_k, candidates, rerank, retrieval, ...) or a "
        "KEEL_ setting (chunk_size, ...) for every configuration; repeatable",
    )
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N queries")
    parser.add_argument(
        "--sample",
        type=int,
        default=None,
        help="evaluate a fixed random sample of N queries (see --seed)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample and --distractors")
    parser.add_argument(
        "--distractors",
        type=int,
        default=None,
        help="cut the corpus to the evaluated queries' judged documents plus N "
        "seeded random others (quick runs and CI gates; scores run higher)",
    )
    parser.add_argument("--out", type=Path, default=Path("eval-out"), help="output directory")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where isolated eval collections live (default: <data_dir>/eval)",
    )
    parser.add_argument("--cache", action="store_true", help="let runs use the answer cache")
    parser.add_argument(
        "--judge", action="store_true", help="add LLM-judged faithfulness (needs a configured LLM)"
    )
    parser.add_argument(
        "--langsmith",
        action="store_true",
        help="upload the run as LangSmith experiments (needs LANGSMITH_API_KEY)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run_eval)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    # Imported here so that `keel --help` and the other commands start without the eval stack.
    from evals.datasets import distractor_documents, load_dataset, subset_corpus
    from evals.report import text_table
    from evals.runner import evaluate
    from evals.tracking import langsmith_available, upload_experiments

    """Runs `keel eval`; 0 on success, 2 on a usage or configuration error."""
    if args.pairs is not None:
        return run_pairs(args)
    if args.dataset is None:
        print("keel eval: give --dataset (or --pairs)", file=sys.stderr)
        return 2
    try:
        settings = Settings()
        if args.langsmith and not langsmith_available():
            print("keel eval: --langsmith needs LANGSMITH_API_KEY", file=sys.stderr)
            return 2
        if args.judge and not settings.llm_configured:
            print(
                "keel eval: --judge needs a configured LLM (KEEL_LLM_BASE_URL / key)",
                file=sys.stderr,
            )
            return 2
        configs = configurations(args.config, args.compare, args.overrides)
        dataset = load_dataset(args.dataset, args.split, args.corpus)
        if args.sample:
            dataset = dataset.sample(args.sample, args.seed)
        if args.limit:
            dataset = dataset.head(args.limit)
        if args.distractors is not None and dataset.documents is not None:
            dataset = subset_corpus(dataset, args.distractors, args.seed)
        if args.with_corpus:
            if dataset.documents is None:
                print("keel eval: --with-corpus needs a dataset with a corpus", file=sys.stderr)
                return 2
            extra, skipped = distractor_documents(args.with_corpus)
            for reason in skipped:
                print(f"keel eval: skipped {reason}", file=sys.stderr)
            dataset = dataset.with_distractors(extra)
        if args.without_relevant:
            if dataset.documents is None:
                print(
                    "keel eval: --without-relevant needs a dataset with a corpus", file=sys.stderr
                )
                return 2
            dataset = dataset.without_relevant()
        if not dataset.queries:
            print("keel eval: the dataset has no queries", file=sys.stderr)
            return 2
        runs = asyncio.run(
            evaluate(
                dataset,
                configs,
                settings,
                out_dir=args.out,
                data_dir=args.data_dir,
                use_cache=args.cache,
                judge=args.judge,
                show_progress=not args.no_progress,
                plots=not args.no_plots,
            )
        )
    except KeelError as exc:
        print(f"keel eval: {exc}", file=sys.stderr)
        return 2
    print(text_table([run.summary for run in runs]))
    ingest = runs[0].summary.get("ingest") or {}
    if ingest.get("chunks_added"):
        print(
            f"ingested {ingest['documents']} documents ({ingest['chunks_added']} chunks) "
            f"in {ingest['seconds']} s into {ingest['collection']}"
        )
    print(f"wrote {args.out}/results.jsonl, summary.json, report.md")
    if args.langsmith:
        try:
            names = upload_experiments(dataset, runs)
        except Exception as exc:
            print(f"keel eval: LangSmith upload failed: {exc}", file=sys.stderr)
            return 1
        print(f"uploaded LangSmith experiments: {', '.join(names)}")
    return 0


def run_pairs(args: argparse.Namespace) -> int:
    """`keel eval --pairs FILE`: scores the semantic cache's decision on question pairs."""
    try:
        summary = score_pairs(load_pairs(args.pairs), MiniLMEmbedder(), Settings())
    except KeelError as exc:
        print(f"keel eval: {exc}", file=sys.stderr)
        return 2
    print(pairs_report(summary))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache_pairs.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}/cache_pairs.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (`python -m evals.cli eval ...`) until the keel CLI wires it in."""
    parser = argparse.ArgumentParser(prog="keel")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
