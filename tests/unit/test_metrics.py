"""Evaluation metrics: hand-computed values, edge cases, and the chunk-to-document aggregation."""

import math

import pytest

from evals import metrics
from evals.configs import configurations, parse_overrides
from evals.datasets import EvalQuery, abstract_sentences, read_qrels
from evals.report import gold_evidence, render_answers
from graph.errors import InvalidInput

QRELS = {"a": 1.0, "b": 1.0}


def test_doc_ranking_keeps_each_document_at_its_best_chunk():
    assert metrics.doc_ranking(["d1#0", "d2#1", "d1#1", "d3#0", "d2#0"]) == ["d1", "d2", "d3"]


def test_ndcg_perfect_and_hand_computed():
    assert metrics.ndcg_at_k(["a", "b", "x"], QRELS, 10) == pytest.approx(1.0)
    # relevant at ranks 2 and 3: (1/log2(3) + 1/log2(4)) / (1 + 1/log2(3))
    expected = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert metrics.ndcg_at_k(["x", "a", "b"], QRELS, 10) == pytest.approx(expected)


def test_ndcg_cuts_at_k_and_uses_graded_gains():
    assert metrics.ndcg_at_k(["x", "y", "a"], QRELS, 2) == 0.0
    graded = {"a": 2.0, "b": 1.0}
    swapped = metrics.ndcg_at_k(["b", "a"], graded, 10)
    assert 0.0 < swapped < metrics.ndcg_at_k(["a", "b"], graded, 10) == pytest.approx(1.0)


def test_ndcg_ideal_is_capped_at_k():
    qrels = {str(i): 1.0 for i in range(20)}
    assert metrics.ndcg_at_k([str(i) for i in range(10)], qrels, 10) == pytest.approx(1.0)


def test_recall_mrr_hit():
    ranking = ["x", "a", "y", "z", "b"]
    assert metrics.recall_at_k(ranking, QRELS, 2) == 0.5
    assert metrics.recall_at_k(ranking, QRELS, 5) == 1.0
    assert metrics.mrr_at_k(ranking, QRELS, 10) == 0.5
    assert metrics.mrr_at_k(ranking, QRELS, 1) == 0.0
    assert metrics.hit_at_k(ranking, QRELS, 1) == 0.0
    assert metrics.hit_at_k(ranking, QRELS, 2) == 1.0


def test_non_positive_judgements_are_not_relevant():
    qrels = {"a": 0.0, "b": 1.0}
    assert metrics.recall_at_k(["a"], qrels, 10) == 0.0
    assert metrics.mrr_at_k(["a", "b"], qrels, 10) == 0.5


@pytest.mark.parametrize(
    "fn", [metrics.ndcg_at_k, metrics.recall_at_k, metrics.mrr_at_k, metrics.hit_at_k]
)
def test_no_judgements_or_no_ranking_scores_zero(fn):
    assert fn(["a"], {}, 10) == 0.0
    assert fn([], QRELS, 10) == 0.0


def test_percentile_interpolates_and_latency_summary():
    assert metrics.percentile([], 50) == 0.0
    assert metrics.percentile([5.0], 95) == 5.0
    assert metrics.percentile([1, 2, 3, 4], 50) == 2.5
    assert metrics.percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    summary = metrics.latency_summary([10.0, 20.0, 30.0])
    assert summary == {"count": 3, "mean": 20.0, "p50": 20.0, "p95": 29.0, "max": 30.0}
    assert metrics.latency_summary([])["count"] == 0


def test_rate_and_mean():
    assert metrics.rate([True, False, False, True]) == 0.5
    assert metrics.rate([]) == 0.0
    assert metrics.mean([1.0, 2.0]) == 1.5


def test_evidence_precision_recall():
    gold = [("d1", 0), ("d1", 3), ("d2", 1)]
    assert metrics.evidence_precision_recall([("d1", 0), ("d9", 2)], gold) == (
        0.5,
        pytest.approx(1 / 3),
    )
    assert metrics.evidence_precision_recall([], gold) == (0.0, 0.0)
    assert metrics.evidence_precision_recall([("d1", 0)], []) == (0.0, 0.0)


def test_citation_faithfulness():
    assert metrics.citation_numbers("A [1]. B [3][1].") == [1, 3, 1]
    ok = metrics.citation_faithfulness("A [1]. B [2].", 2)
    assert ok == {"cited": 1.0, "in_range": 1.0, "all_in_range": 1.0}
    bad = metrics.citation_faithfulness("A [1]. B [7].", 5)
    assert bad == {"cited": 1.0, "in_range": 0.5, "all_in_range": 0.0}
    assert metrics.citation_faithfulness("no citation", 5)["cited"] == 0.0


def test_abstract_sentences_split_sentences_joined_without_space():
    text = "First finding holds.Second one (n = 3) too. Third, e.g. here, ends."
    assert abstract_sentences(text) == [
        "First finding holds.",
        "Second one (n = 3) too.",
        "Third, e.g. here, ends.",
    ]


def test_read_qrels_skips_header(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t2\n2\td3\t1\n")
    assert read_qrels(path) == {"1": {"d1": 1.0, "d2": 2.0}, "2": {"d3": 1.0}}


def test_overrides_are_typed_and_routed():
    context, settings = parse_overrides(
        ["top_k=3", "rerank=false", "retrieval=dense", "chunk_size=800"]
    )
    assert context == {"top_k": 3, "rerank": False, "retrieval": "dense"}
    assert settings == {"chunk_size": 800}
    with pytest.raises(InvalidInput):
        parse_overrides(["nonsense=1"])
    with pytest.raises(InvalidInput):
        parse_overrides(["top_k"])


def test_compare_builds_one_configuration_per_name_with_shared_overrides():
    configs = configurations(None, "dense,bm25,hybrid+rerank,top_k=3", ["candidates=50"])
    assert [c.name for c in configs] == ["dense", "bm25", "hybrid+rerank", "top_k=3"]
    assert configs[0].build_context().retrieval == "dense"
    assert not configs[1].build_context().rerank
    assert all(c.build_context().candidates == 50 for c in configs)
    assert configs[3].build_context().top_k == 3
    assert configs[2].build_context().use_cache is False


def test_convex_fusion_normalises_each_list_and_weights_them():
    from nodes.retrieve import convex_fusion

    fused = dict(
        convex_fusion(
            {"dense": [("a", 0.9), ("b", 0.5), ("c", 0.1)], "lexical": [("c", 30.0), ("d", 10.0)]},
            {"dense": 0.4, "lexical": 0.6},
        )
    )
    assert fused == pytest.approx({"a": 0.4, "b": 0.2, "c": 0.6, "d": 0.0})
    assert convex_fusion({"dense": [], "lexical": [("x", 2.0)]}) == [("x", 1.0)]
    # normalised over the best `depth` of each list: a longer tail does not move the top
    lexical = [("c", 30.0), ("d", 10.0), ("e", 5.0), ("f", 0.0)]
    assert dict(convex_fusion({"lexical": lexical}, depth=2)) == pytest.approx(
        {"c": 1.0, "d": 0.0, "e": 0.0, "f": 0.0}
    )


def test_distractors_join_a_dataset_under_their_own_ids(tmp_path):
    from corpus import Document
    from evals.datasets import EvalDataset, distractor_documents

    manual = tmp_path / "manual"
    (manual / "sub").mkdir(parents=True)
    (manual / "sub" / "page.html").write_text("<h1>Locks</h1><p>A mutex guards shared data.</p>")
    (manual / "empty.html").write_text("<nav>Home</nav>")
    docs, skipped = distractor_documents([manual])
    assert [d.id for d in docs] == ["distractor:manual/sub/page.html"]
    assert docs[0].title == "Locks" and "mutex" in docs[0].text
    assert skipped == [f"{manual / 'empty.html'}: no text found"]
    dataset = EvalDataset("d", [], [Document("1", "judged")]).with_distractors(docs)
    assert [d.id for d in dataset.documents or []] == ["1", "distractor:manual/sub/page.html"]
    assert dataset.fingerprint() != EvalDataset("d", [], [Document("1", "judged")]).fingerprint()


def test_without_relevant_takes_every_judged_document_out():
    from corpus import Document
    from evals.datasets import EvalDataset, EvalQuery

    queries = [
        EvalQuery("q1", "a?", relevant={"1": 1.0}),
        EvalQuery("q2", "b?", relevant={"3": 1.0}),
    ]
    docs = [Document(str(n), f"text {n}") for n in range(1, 5)]
    absent = EvalDataset("d", queries, docs).without_relevant()
    assert [d.id for d in absent.documents or []] == ["2", "4"]
    assert absent.queries == queries and absent.name == "d-without-relevant"


def test_folds_keep_questions_that_share_a_judged_document_together():
    from evals.datasets import EvalDataset

    judged = [{"a": 1.0}, {"b": 1.0}, {"a": 1.0, "c": 1.0}, {"c": 1.0}, {"d": 1.0}, {}, {"e": 1.0}]
    queries = [EvalQuery(f"q{n}", "?", relevant=r) for n, r in enumerate(judged)]
    folds = EvalDataset("d", queries).folds(3)
    # q0, q2 and q3 are one group (through "a" and "c"): one fold, the others fill the rest
    assert folds[0] == folds[2] == folds[3]
    assert sorted(folds.count(k) for k in range(3)) == [2, 2, 3]
    assert folds == EvalDataset("d", queries).folds(3)  # the same every time


def test_answers_report_sets_sampled_answers_beside_their_gold_evidence():
    queries = [
        EvalQuery(id="q1", question="Does A cause B?", evidence=(("d1", 0), ("d1", 2))),
        EvalQuery(id="q2", question="Is C rare?"),  # no annotated evidence: never sampled
        EvalQuery(id="q3", question="Does D help?", evidence=(("d2", 1),)),
    ]
    sentences = {"d1": ["A causes B.", "Unrelated.", "B follows A."], "d2": ["D.", "D helps."]}
    evidence = gold_evidence(queries, sentences.__getitem__)
    assert evidence == {
        "q1": [("d1", 0, "A causes B."), ("d1", 2, "B follows A.")],
        "q3": [("d2", 1, "D helps.")],
    }
    rows = [
        {
            "config": "default",
            "query_id": q.id,
            "question": q.question,
            "answer": f"Answer to {q.id}. [1]",
            "model": "extractive",
            "degraded": [],
            "metrics": {"evidence_precision": 1.0, "evidence_recall": 0.5},
            "evidence_selected": [["d1", 0]] if q.id == "q1" else [],
        }
        for q in queries
    ]
    report = render_answers(rows, evidence, sample=5)
    assert report.startswith("# Answers beside their gold evidence (default)")
    assert report.count("\n## ") == 2 and "Is C rare?" not in report
    assert "> Answer to q1. [1]" in report and "precision 1.00; recall 0.50" in report
    assert "- ✔ `d1` #0: A causes B." in report and "- `d1` #2: B follows A." in report
    assert render_answers(rows, evidence, sample=1) == render_answers(rows, evidence, sample=1)
    assert render_answers(rows, evidence, sample=1).count("\n## ") == 1
