"""Claim verdicts computed from synthetic results."""
from dataclasses import replace

import pytest

from ragft_helpers import claims


def _ci(value, half=0.05, n=40):
    return {"value": value, "low": value - half, "high": value + half, "n": n}


@pytest.fixture
def evidence():
    return claims.Evidence(
        mc={"base": _ci(0.3), "rag": _ci(0.8), "ft": _ci(0.35)},
        kb_perplexity={"base": 20.0, "ft": 8.0},
        wikitext_perplexity={"base": 30.0, "ft": 33.0},
        latency_p50={"base": 1.0, "rag": 2.5},
        train_seconds=300.0, index_seconds=40.0,
        fresh={"rag": _ci(0.9), "ft": _ci(0.1)},
        ft_tokens=10_000, model_name="SmolLM2-135M-Instruct")


def _verdicts(evidence):
    table = claims.claims_table(evidence)
    return dict(zip(table["claim"], table["verdict"]))


def test_clear_results_give_clear_verdicts(evidence):
    verdicts = _verdicts(evidence)
    assert verdicts["RAG is less prone to overfitting"] == claims.SUPPORTED
    assert verdicts["Fine-tuning may suffer catastrophic forgetting"] == claims.SUPPORTED
    assert verdicts["RAG has more computational overhead at generation time"] == claims.SUPPORTED
    assert verdicts["Fine-tuning is quicker to implement"] == claims.CONTRADICTED
    assert verdicts["RAG adapts to dynamic or evolving information"] == claims.SUPPORTED
    assert verdicts["Fine-tuning needs less data and compute than training from scratch"] == claims.SUPPORTED


def test_overlapping_intervals_are_inconclusive(evidence):
    close = replace(evidence, mc={**evidence.mc, "rag": _ci(0.38)}, fresh={"rag": _ci(0.5), "ft": _ci(0.45)})
    verdicts = _verdicts(close)
    assert verdicts["RAG is less prone to overfitting"] == claims.INCONCLUSIVE
    assert verdicts["RAG adapts to dynamic or evolving information"] == claims.INCONCLUSIVE


def test_reversed_results_contradict(evidence):
    reversed_ = replace(evidence, mc={**evidence.mc, "rag": _ci(0.1)},
                        wikitext_perplexity={"base": 30.0, "ft": 25.0},
                        latency_p50={"base": 2.0, "rag": 1.0}, train_seconds=10.0,
                        fresh={"rag": _ci(0.1), "ft": _ci(0.9)})
    verdicts = _verdicts(reversed_)
    assert verdicts["RAG is less prone to overfitting"] == claims.CONTRADICTED
    assert verdicts["Fine-tuning may suffer catastrophic forgetting"] == claims.CONTRADICTED
    assert verdicts["RAG has more computational overhead at generation time"] == claims.CONTRADICTED
    assert verdicts["Fine-tuning is quicker to implement"] == claims.SUPPORTED
    assert verdicts["RAG adapts to dynamic or evolving information"] == claims.CONTRADICTED


def test_small_changes_and_unknown_models_are_inconclusive(evidence):
    flat = replace(evidence, wikitext_perplexity={"base": 30.0, "ft": 30.1},
                   latency_p50={"base": 1.0, "rag": 1.05}, model_name="some-local-model")
    verdicts = _verdicts(flat)
    assert verdicts["Fine-tuning may suffer catastrophic forgetting"] == claims.INCONCLUSIVE
    assert verdicts["RAG has more computational overhead at generation time"] == claims.INCONCLUSIVE
    assert verdicts["Fine-tuning needs less data and compute than training from scratch"] == claims.INCONCLUSIVE


def test_interval_comparison():
    assert claims.compare_intervals(_ci(0.8), _ci(0.2)) == 1
    assert claims.compare_intervals(_ci(0.2), _ci(0.8)) == -1
    assert claims.compare_intervals(_ci(0.5), _ci(0.55)) == 0


def _summary(mc, single_hop):
    return {"mc": {"value": mc}, "mc_single-hop": {"value": single_hop}}


def test_expectations_report_each_check_with_its_numbers():
    import pandas as pd

    summaries = {"base": _summary(0.3, 0.2), "RAG": _summary(0.7, 0.9), "FT": _summary(0.35, 0.3),
                 "FT+aug": _summary(0.3, 0.3)}
    perplexities = pd.DataFrame({"KB-text perplexity": [20.0, 9.0], "WikiText perplexity": [30.0, 30.1]},
                                index=["base", "kb-full"])
    table = claims.expectations(summaries, perplexities)
    holds = dict(zip(table["expectation"].str.split(" \\(").str[0], table["holds"]))
    assert holds["RAG beats the base model on single-hop questions"]
    assert holds["RAG beats plain fine-tuning on single-hop questions"]
    assert holds["fine-tuning lowers perplexity on knowledge-base text"]
    assert not holds["augmentation raises fine-tuning's knowledge score"]  # 0.30 < 0.35
    assert not holds["forgetting is measurable"]  # +0.3% is within the 1% tolerance
    assert "30.0 → 30.1 (+0.3%)" in set(table["measured"])
