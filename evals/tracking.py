"""Optional upload of an eval run to LangSmith as an experiment (only with `--langsmith`)."""

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from evals.datasets import EvalDataset
from graph.errors import ConfigError


def langsmith_available() -> bool:
    """True when a LangSmith API key is set in the environment."""
    return bool(os.environ.get("LANGSMITH_API_KEY") or os.environ.get("LANGCHAIN_API_KEY"))


def upload_experiments(dataset: EvalDataset, runs: list[Any], client: Any = None) -> list[str]:
    """Uploads each configuration as a LangSmith experiment over a dataset of the queries
    (created once per dataset name), with one run per query and its metrics as feedback.
    Returns the experiment names. Raises `ConfigError` without an API key."""
    if client is None:
        if not langsmith_available():
            raise ConfigError("--langsmith needs LANGSMITH_API_KEY")
        from langsmith import Client

        client = Client()
    name = f"keel-eval-{dataset.name}" + (f"-{dataset.split}" if dataset.split else "")
    if client.has_dataset(dataset_name=name):
        ls_dataset = client.read_dataset(dataset_name=name)
        examples = {
            e.metadata.get("query_id"): e.id
            for e in client.list_examples(dataset_id=ls_dataset.id)
            if e.metadata
        }
    else:
        ls_dataset = client.create_dataset(name, description="keel eval queries")
        examples = {}
    missing = [q for q in dataset.queries if q.id not in examples]
    if missing:
        client.create_examples(
            dataset_id=ls_dataset.id,
            examples=[
                {
                    "inputs": {"question": q.question},
                    "outputs": {"relevant_ids": sorted(q.relevant), "answer": q.answer},
                    "metadata": {"query_id": q.id},
                }
                for q in missing
            ],
        )
        examples = {
            e.metadata.get("query_id"): e.id
            for e in client.list_examples(dataset_id=ls_dataset.id)
            if e.metadata
        }
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    names = []
    for run in runs:
        experiment = f"keel-{run.config.name}-{stamp}"
        client.create_project(
            experiment,
            reference_dataset_id=ls_dataset.id,
            metadata={"knobs": run.config.describe(), "summary": run.summary["metrics"]},
        )
        for row in run.rows:
            run_id = uuid.uuid4()
            end = datetime.now(UTC)
            client.create_run(
                "keel",
                {"question": row["question"]},
                "chain",
                id=run_id,
                project_name=experiment,
                outputs={"answer": row["answer"], "doc_ranking": row.get("doc_ranking", [])[:10]},
                reference_example_id=examples.get(row["query_id"]),
                start_time=end - timedelta(milliseconds=row["timings_ms"].get("total", 0.0)),
                end_time=end,
                extra={"metadata": {"timings_ms": row["timings_ms"]}},
            )
            for key, value in row.get("metrics", {}).items():
                client.create_feedback(run_id, key, score=value)
        names.append(experiment)
    client.flush() if hasattr(client, "flush") else None
    return names
