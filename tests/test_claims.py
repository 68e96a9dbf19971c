"""Claim verdicts and directions computed from synthetic results."""
from dataclasses import replace

import pytest

from ragft_helpers import claims


def _ci(value, half=0.05, n=40):
    return {"value": value, "low": value - half, "high": value + half, "n": n}


@pytest.fixture
def evidence():
    """Every claim's evidence pointing the way the course expects, with intervals apart."""
    return claims.Evidence(
        mc={"base": _ci(0.3), "rag": _ci(0.8), "rag_random": _ci(0.3), "ft": _ci(0.35),
            "ft_aug": _ci(0.4), "lora_aug": _ci(0.38)},
        misleading={"base": _ci(0.9), "rag": _ci(0.4)},
        context={"relevant": _ci(0.9), "missing": _ci(0.4)},
        kb_perplexity={"base": 20.0, "ft": 8.0, "scratch": 4000.0},
        wikitext_perplexity={"base": 30.0, "ft": 33.0, "steps": 64},
        latency_p50={"base": 1.0, "rag": 2.5}, peak_memory_mb={"base": 1500.0, "rag": 1700.0},
        train_seconds=300.0, index_seconds=40.0,
        fresh={"rag": _ci(0.9), "ft": _ci(0.1)},
        parameters={"lora": 1_000, "full": 100_000},
        diversity={"base": _ci(0.8), "rag": _ci(0.6)},
        raft={"base + RAG": _ci(0.3), "RAFT LoRA + RAG": _ci(0.6), "KB fine-tune + RAG": _ci(0.35)},
        tasks={"fine-tuned": _ci(0.9), "few-shot": _ci(0.6), "zero-shot": _ci(0.2)},
        new_intent={"kNN": 0.5, "fine-tuned": 0.0},
        overtraining={"best_epoch": 4, "last_epoch": 30, "validation_best": 0.6, "validation_last": 1.1,
                      "test_best": 0.7, "test_last": 1.2, "train_best": 0.3, "train_last": 0.001})


def _verdicts(evidence):
    return claims.claims_table(evidence)["verdict"].to_dict()


def test_every_claim_has_a_row_with_the_article_words_and_its_experiment(evidence):
    table = claims.claims_table(evidence)
    assert list(table.index) == [claim.name for claim in claims.CLAIMS]
    assert len(table) >= 14 and table.index.is_unique
    assert (table["article"].str.len() > 10).all() and (table["experiment"].str.len() > 10).all()
    assert set(claims.EXPECTED) <= set(table.index)


def test_clear_results_give_clear_verdicts_and_every_asserted_direction_holds(evidence):
    verdicts = _verdicts(evidence)
    for name, expected in claims.EXPECTED.items():
        assert verdicts[name] == expected, name
    assert verdicts["RAG reduces misleading answers"] == claims.SUPPORTED
    assert verdicts["Fine-tuning may forget"] == claims.SUPPORTED
    assert claims.claims_table(evidence).loc["Fine-tuning may forget", "evidence"] == (
        "WikiText perplexity 30.0 → 33.0 (+10.0%) over 64 steps on the articles")
    # the article's two sentences on creativity: one is supported exactly when the other is not
    assert verdicts["RAG is less suited to creative content"] == claims.SUPPORTED
    assert verdicts["RAG is more creative"] == claims.CONTRADICTED
    table = claims.claims_table(evidence)
    assert all(claims.direction_holds(table, name) for name in claims.EXPECTED)
    assert claims.flipped(table) == []
    assert "4,000" in table.loc["Fine-tuning builds on pre-training", "evidence"]


def test_overlapping_intervals_are_inconclusive_but_keep_their_direction(evidence):
    close = replace(evidence, mc={**evidence.mc, "rag": _ci(0.38), "rag_random": _ci(0.36)},
                    fresh={"rag": _ci(0.5), "ft": _ci(0.45)})
    table = claims.claims_table(close)
    assert table.loc["RAG depends on retrieval quality", "verdict"] == claims.INCONCLUSIVE
    assert table.loc["RAG adapts to evolving information", "verdict"] == claims.INCONCLUSIVE
    assert claims.direction_holds(table, "RAG depends on retrieval quality")  # 0.38 > 0.36


def test_a_flipped_result_flips_the_verdict_and_fails_its_asserted_direction(evidence):
    flipped = replace(evidence, mc={**evidence.mc, "rag": _ci(0.2), "rag_random": _ci(0.5)},
                      wikitext_perplexity={"base": 30.0, "ft": 27.0},
                      latency_p50={"base": 2.5, "rag": 1.0}, train_seconds=10.0,
                      fresh={"rag": _ci(0.1), "ft": _ci(0.9)},
                      kb_perplexity={"base": 20.0, "ft": 8.0, "scratch": 6.0},
                      new_intent={"kNN": 0.0, "fine-tuned": 0.0})
    table = claims.claims_table(flipped)
    turned = ["RAG gives domain-specific answers", "RAG depends on retrieval quality",
              "RAG adapts to evolving information", "RAG costs more at answer time",
              "Fine-tuning builds on pre-training", "Fine-tuning is quicker to implement",
              "Retrieval adapts to a new task label", "RAG is less prone to overfitting",
              "Fine-tuning may forget"]
    for name in turned:
        assert not claims.direction_holds(table, name), name
    assert sorted(claims.flipped(table)) == sorted(turned)
    assert table.loc["Fine-tuning is quicker to implement", "verdict"] == claims.SUPPORTED
    assert table.loc["Fine-tuning may forget", "verdict"] == claims.CONTRADICTED
    assert table.loc["Retrieval adapts to a new task label", "verdict"] == claims.CONTRADICTED


def test_lora_that_costs_accuracy_or_trains_everything_contradicts_fewer_parameters(evidence):
    costly = replace(evidence, mc={**evidence.mc, "lora_aug": _ci(0.1)})
    assert _verdicts(costly)["Fine-tuning adjusts fewer parameters"] == claims.CONTRADICTED
    everything = replace(evidence, parameters={"lora": 100_000, "full": 100_000})
    assert _verdicts(everything)["Fine-tuning adjusts fewer parameters"] == claims.CONTRADICTED


def test_evidence_from_notebooks_that_did_not_run_is_not_measured_and_fails_its_assert(evidence):
    alone = replace(evidence, raft=None, **claims.task_evidence(None))
    table = claims.claims_table(alone)
    unmeasured = set(table.index[table["verdict"] == claims.NOT_MEASURED])
    assert unmeasured == claims.MEASURED_ELSEWHERE  # what notebook 08's checkpoint allows
    assert claims.MEASURED_ELSEWHERE == {
        "Combining both beats either alone", "Fine-tuning wins a narrow task",
        "Retrieval adapts to a new task label", "Fine-tuning over-fits when trained too long"}
    for name in claims.MEASURED_ELSEWHERE:
        assert "notebook 0" in table.loc[name, "evidence"]
        assert not claims.direction_holds(table, name)
    assert claims.flipped(table) == []  # what was not measured is reported, not counted as flipped


def test_overtraining_without_a_rise_is_inconclusive_and_a_useless_stop_contradicts(evidence):
    flat = dict(evidence.overtraining, validation_last=0.6, best_epoch=30)
    table = claims.claims_table(replace(evidence, overtraining=flat))
    assert table.loc["Fine-tuning over-fits when trained too long", "verdict"] == claims.INCONCLUSIVE
    assert "Fine-tuning over-fits when trained too long" in claims.flipped(table)
    useless = dict(evidence.overtraining, test_best=1.3)
    verdict = claims.claims_table(replace(evidence, overtraining=useless)).loc[
        "Fine-tuning over-fits when trained too long", "verdict"]
    assert verdict == claims.CONTRADICTED


def test_saved_notebook_results_become_evidence():
    document = {"table": [
        {"system": name, "macro_f1": f1, "macro_f1_low": f1 - 0.1, "macro_f1_high": f1 + 0.1, "n": 30}
        for name, f1 in (("zero-shot", 0.2), ("few-shot", 0.6), ("kNN", 0.7),
                         ("fine-tuned minilm", 0.9), ("fine-tuned lm-full", 0.8))],
        "new_intent": [{"system": "kNN", "group_travel recall": 0.5},
                       {"system": "fine-tuned (10 intents)", "group_travel recall": 0.0}],
        "early_stopping": {"best_epoch": 3}}
    found = claims.task_evidence(document)
    assert found["tasks"]["fine-tuned"]["value"] == 0.9 and found["tasks"]["few-shot"]["low"] == 0.5
    assert found["new_intent"] == {"kNN": 0.5, "fine-tuned": 0.0}
    assert found["overtraining"] == {"best_epoch": 3}
    assert claims.raft_evidence({"pooled": {"base + RAG": {"value": 0.3}}}) == {"base + RAG": {"value": 0.3}}
    assert claims.raft_evidence(None) is None


def test_direction_holds_refuses_a_claim_without_an_asserted_direction(evidence):
    with pytest.raises(KeyError, match="no asserted direction"):
        claims.direction_holds(claims.claims_table(evidence), "RAG is more creative")


def test_compare_intervals():
    assert claims.compare_intervals(_ci(0.8), _ci(0.2)) == 1
    assert claims.compare_intervals(_ci(0.2), _ci(0.8)) == -1
    assert claims.compare_intervals(_ci(0.5), _ci(0.55)) == 0
