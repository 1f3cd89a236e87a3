"""Reports for eval runs: the comparison table (terminal and Markdown), the sampled answers
beside their gold evidence, and PNG plots."""

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

TABLE_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "hit@1")
EXTRA_METRICS = ("evidence_precision", "evidence_recall", "citation_in_range", "judge_faithful")


def comparison_rows(configs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table: ranking metrics and stage latencies."""
    present = [m for m in EXTRA_METRICS if any(m in c["metrics"] for c in configs)]
    header = [
        "config",
        *TABLE_METRICS,
        *present,
        "retrieve p50",
        "retrieve p95",
        "rerank p50",
        "rerank p95",
        "retr+rerank p50",
        "retr+rerank p95",
        "total p95",
        "fallback",
    ]
    rows = []
    for c in configs:
        lat = c["latency_ms"]

        def ms(node: str, q: str, lat: dict[str, Any] = lat) -> str:
            return f"{lat[node][q]:.1f}" if node in lat else "-"

        rows.append(
            [
                c["config"],
                *(f"{c['metrics'].get(m, 0.0):.4f}" for m in TABLE_METRICS),
                *(f"{c['metrics'][m]:.4f}" if m in c["metrics"] else "-" for m in present),
                ms("retrieve", "p50"),
                ms("retrieve", "p95"),
                ms("rerank", "p50"),
                ms("rerank", "p95"),
                ms("retrieve+rerank", "p50"),
                ms("retrieve+rerank", "p95"),
                ms("total", "p95"),
                f"{c['rates']['fallback']:.3f}",
            ]
        )
    return header, rows


def text_table(configs: list[dict[str, Any]]) -> str:
    """The comparison as an aligned plain-text table for the terminal."""
    header, rows = comparison_rows(configs)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def render_report(summary: dict[str, Any], images: list[str]) -> str:
    """report.md: dataset, comparison, per-node latencies, rates, ingestion, plots."""
    configs = summary["configs"]
    parts = [
        f"# keel eval: {summary['dataset']}"
        + (f" ({summary['split']})" if summary.get("split") else ""),
        "",
        f"{summary['queries']} queries. Ranking metrics are at document level (a document ranks at "
        "its best chunk); latencies in milliseconds, measured in the compiled graph.",
        "",
        "## Comparison",
        "",
        markdown_table(*comparison_rows(configs)),
        "",
        "## Latency per node (ms)",
        "",
    ]
    lat_rows = []
    for c in configs:
        for node, s in c["latency_ms"].items():
            lat_rows.append(
                [
                    c["config"],
                    node,
                    str(s["count"]),
                    f"{s['p50']:.1f}",
                    f"{s['p95']:.1f}",
                    f"{s['max']:.1f}",
                ]
            )
    parts += [markdown_table(["config", "node", "n", "p50", "p95", "max"], lat_rows), ""]
    parts += ["## Rates", ""]
    rate_names = sorted({k for c in configs for k in c["rates"]})
    parts += [
        markdown_table(
            ["config", *rate_names],
            [[c["config"], *(f"{c['rates'][r]:.3f}" for r in rate_names)] for c in configs],
        ),
        "",
    ]
    parts += ["## Configurations and ingestion", ""]
    for c in configs:
        ingest = c.get("ingest") or {}
        parts.append(
            f"- `{c['config']}`: {c['knobs']}; collection `{ingest.get('collection')}`, "
            f"{'reused' if ingest.get('reused') else 'ingested'} "
            f"({ingest.get('chunks_added', 0)} chunks added in {ingest.get('seconds', 0)} s)"
        )
    if images:
        parts += ["", "## Plots", ""] + [f"![{name}]({name})" for name in images]
    return "\n".join(parts) + "\n"


ANSWER_SAMPLE = 20


def render_answers(
    rows: list[dict[str, Any]],
    evidence: dict[str, list[tuple[str, int, str]]],
    sample: int = ANSWER_SAMPLE,
    seed: int = 0,
) -> str:
    """answers.md: a fixed random sample of one configuration's answers to questions with
    annotated evidence, each beside its gold rationale sentences (`evidence`: query id ->
    (doc id, sentence index, text)), so a reader can judge what the metrics summarise. A gold
    sentence the answer quotes is marked with a check."""
    judged = [r for r in rows if evidence.get(r["query_id"])]
    chosen = sorted(random.Random(seed).sample(range(len(judged)), min(sample, len(judged))))
    config = rows[0]["config"] if rows else ""
    parts = [
        f"# Answers beside their gold evidence ({config})",
        "",
        f"{len(chosen)} of the {len(judged)} questions with annotated evidence (seed {seed}). "
        "✔ marks a gold sentence the answer quotes.",
    ]
    for number, i in enumerate(chosen, start=1):
        row = judged[i]
        scores = row.get("metrics", {})
        pr = [f"{k.split('_')[1]} {scores[k]:.2f}" for k in _EVIDENCE if k in scores]
        marks = [row.get("model") or "-", *(row.get("degraded") or []), *pr]
        quoted = {(doc, index) for doc, index in row.get("evidence_selected", [])}
        parts += [
            "",
            f"## {number}. {row['question']}",
            "",
            f"Answer ({'; '.join(marks)}):",
            "",
            _quote(row["answer"] or "(none)"),
            "",
            "Gold evidence:",
            "",
            *(
                f"- {'✔ ' if (doc, index) in quoted else ''}`{doc}` #{index}: {text}"
                for doc, index, text in evidence[row["query_id"]]
            ),
        ]
    return "\n".join(parts) + "\n"


_EVIDENCE = ("evidence_precision", "evidence_recall")


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def gold_evidence(
    queries: list[Any], sentences_of: Callable[[str], list[str]]
) -> dict[str, list[tuple[str, int, str]]]:
    """Each query's annotated evidence as (doc id, sentence index, sentence text)."""
    out: dict[str, list[tuple[str, int, str]]] = {}
    for query in queries:
        for doc, index in query.evidence:
            sentences = sentences_of(doc)
            text = sentences[index] if index < len(sentences) else "(sentence not found)"
            out.setdefault(query.id, []).append((doc, index, text))
    return out


def write_plots(out_dir: Path, runs: list[Any]) -> list[str]:
    """latency.png (per-node distributions per configuration) and metrics.png (metric per
    configuration); returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    nodes = ["retrieve", "rerank", "generate", "fallback", "total"]
    nodes = [n for n in nodes if any(n in r["timings_ms"] for run in runs for r in run.rows)]
    if nodes and runs:
        fig, axes = plt.subplots(1, len(nodes), figsize=(3.2 * len(nodes), 3.6), squeeze=False)
        for ax, node in zip(axes[0], nodes, strict=True):
            data = [
                [r["timings_ms"][node] for r in run.rows if node in r["timings_ms"]] or [0.0]
                for run in runs
            ]
            ax.boxplot(data, showfliers=False)
            ax.set_xticks(
                range(1, len(runs) + 1),
                [run.config.name for run in runs],
                rotation=45,
                ha="right",
                fontsize=7,
            )
            ax.set_title(node)
            ax.set_ylabel("ms")
        fig.suptitle("latency per node (whiskers 1.5 IQR, outliers hidden)")
        fig.tight_layout()
        fig.savefig(out_dir / "latency.png", dpi=110)
        plt.close(fig)
        names.append("latency.png")
    metric_names = [m for m in TABLE_METRICS if any(m in run.summary["metrics"] for run in runs)]
    if metric_names and runs:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(runs) + 2), 3.8))
        width = 0.8 / len(metric_names)
        for i, metric in enumerate(metric_names):
            values = [run.summary["metrics"].get(metric, 0.0) for run in runs]
            xs = [x + i * width for x in range(len(runs))]
            ax.bar(xs, values, width, label=metric)
        ax.set_xticks(
            [x + 0.4 - width / 2 for x in range(len(runs))],
            [run.config.name for run in runs],
            rotation=30,
            ha="right",
            fontsize=8,
        )
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, ncol=len(metric_names))
        ax.set_title("metric per configuration")
        fig.tight_layout()
        fig.savefig(out_dir / "metrics.png", dpi=110)
        plt.close(fig)
        names.append("metrics.png")
    return names
