"""The claims table: each claim the course's source article makes about RAG and fine-tuning, the
experiment that measures it, and a verdict computed from the measurement.

Every verdict is a pure function of an :class:`Evidence` record, filled by notebook 08 from its
own measurements and from the results notebooks 06 (RAFT) and 07 (the task) saved. Accuracies
carry bootstrap intervals (``{"value", "low", "high", "n"}``, as from ``harness.summarise``): two
intervals that overlap give "inconclusive at this scale". Besides its verdict each finding has a
``direction``: whether this run's point estimates lean the claim's way (True), the other way
(False) or neither (None). :data:`EXPECTED` lists the claims whose direction notebook 08 asserts
at every profile, and which way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive at this scale"
NOT_MEASURED = "not measured"

PERPLEXITY_TOLERANCE = 0.01  # relative perplexity changes smaller than 1% count as no change
LATENCY_TOLERANCE = 0.10  # median latencies within 10% count as equal


@dataclass
class Evidence:
    """What the workbook measured, keyed by role rather than by system name. Intervals are
    ``{"value", "low", "high", "n"}``; a field left ``None`` was not measured in this run."""

    mc: dict[str, dict]  # multiple choice, answerable: base, rag, rag_random, ft, ft_aug, lora_aug
    misleading: dict[str, dict]  # free-form answers stating something wrong: base, rag
    context: dict[str, dict]  # RAG's multiple choice with a relevant chunk in the prompt or not:
    #                           "relevant", "missing"
    kb_perplexity: dict[str, float]  # knowledge-base text: base, ft, scratch
    wikitext_perplexity: dict[str, float]  # held-out WikiText before ("base") and after ("ft") the
    #                                        forgetting run's "steps" (forgetting.endpoints)
    latency_p50: dict[str, float]  # seconds per answer: base, rag
    peak_memory_mb: dict[str, float]  # while answering: base, rag
    train_seconds: float  # the plain full fine-tune's training
    index_seconds: float  # embedding the knowledge base from scratch
    fresh: dict[str, dict]  # updated questions after the notices are indexed: rag, ft (stale)
    parameters: dict[str, int]  # trainable parameters: "lora", "full"
    diversity: dict[str, dict]  # distinct-2 of sampled answers to open prompts: base, rag
    raft: dict[str, dict] | None = None  # notebook 06, free-form on held-out articles:
    #                                      "base + RAG", "RAFT LoRA + RAG", "KB fine-tune + RAG"
    tasks: dict[str, dict] | None = None  # notebook 07, macro-F1: "fine-tuned" (the best),
    #                                       "few-shot", "zero-shot"
    new_intent: dict[str, float] | None = None  # notebook 07, recall on the new intent after
    #                                             indexing 10 examples: "kNN", "fine-tuned"
    overtraining: dict[str, float] | None = None  # notebook 07, a classifier trained too long:
    #                                               tasks.early_stopping's losses


@dataclass(frozen=True)
class Finding:
    verdict: str
    evidence: str  # the measured numbers, in words
    direction: bool | None  # the point estimates lean the claim's way (None: neither, or not measured)


@dataclass(frozen=True)
class Claim:
    name: str  # short and stable: notebook 08 asserts directions by it
    article: str  # the source article's words (near-duplicate wordings grouped)
    experiment: str  # what measures it
    judge: Callable[[Evidence], Finding]
    notebook: str = "08"  # the notebook whose run measures it


def compare_intervals(a: dict, b: dict) -> int:
    """+1 when ``a``'s interval lies wholly above ``b``'s, -1 when wholly below, else 0."""
    if a["low"] > b["high"]:
        return 1
    if a["high"] < b["low"]:
        return -1
    return 0


def relative_change(before: float, after: float) -> float:
    return (after - before) / before


def _fmt(interval: dict) -> str:
    return f"{interval['value']:.2f} [{interval['low']:.2f}, {interval['high']:.2f}] (n={interval['n']})"


def _lean(a: float, b: float) -> bool | None:
    """True when ``a`` > ``b``, False when below, None when equal."""
    return None if a == b else a > b


def _by_intervals(a: dict, b: dict, evidence: str) -> Finding:
    """The claim "``a`` is above ``b``", judged by their intervals."""
    verdict = {1: SUPPORTED, -1: CONTRADICTED}.get(compare_intervals(a, b), INCONCLUSIVE)
    return Finding(verdict, evidence, _lean(a["value"], b["value"]))


def _not_measured(what: str) -> Finding:
    return Finding(NOT_MEASURED, what, None)


# ---- retrieval ------------------------------------------------------------------------------------

def domain_answers(e: Evidence) -> Finding:
    return _by_intervals(e.mc["rag"], e.mc["base"],
                         f"multiple choice: RAG {_fmt(e.mc['rag'])} vs the model alone {_fmt(e.mc['base'])}")


def fewer_misleading_answers(e: Evidence) -> Finding:
    rag, base = e.misleading["rag"], e.misleading["base"]
    return _by_intervals(base, rag, f"share of free-form answers stating something wrong (wrong answers "
                                    f"and answers to unanswerable questions): RAG {_fmt(rag)} vs the "
                                    f"model alone {_fmt(base)}")


def retrieval_quality(e: Evidence) -> Finding:
    found = _by_intervals(e.mc["rag"], e.mc["rag_random"],
                          f"multiple choice: RAG {_fmt(e.mc['rag'])} vs the same model given random "
                          f"chunks {_fmt(e.mc['rag_random'])}")
    if e.context.get("relevant") and e.context["relevant"]["n"] and e.context["missing"]["n"]:
        found = Finding(found.verdict, found.evidence + (
            f"; RAG when a chunk of the right section was retrieved {_fmt(e.context['relevant'])}, "
            f"when none was {_fmt(e.context['missing'])}"), found.direction)
    return found


def adapts_to_change(e: Evidence) -> Finding:
    return _by_intervals(e.fresh["rag"], e.fresh["ft"],
                         f"updated questions, multiple choice: RAG after indexing the notices "
                         f"{_fmt(e.fresh['rag'])} vs the fine-tune trained on the old facts {_fmt(e.fresh['ft'])}")


def answer_time_overhead(e: Evidence) -> Finding:
    rag, base = e.latency_p50["rag"], e.latency_p50["base"]
    evidence = (f"median seconds per answer: RAG {rag:.2f}, model alone {base:.2f}; peak memory "
                f"{e.peak_memory_mb['rag']:,.0f} vs {e.peak_memory_mb['base']:,.0f} MB")
    if rag > base * (1 + LATENCY_TOLERANCE):
        return Finding(SUPPORTED, evidence, True)
    if rag < base * (1 - LATENCY_TOLERANCE):
        return Finding(CONTRADICTED, evidence, False)
    return Finding(INCONCLUSIVE, evidence, _lean(rag, base))


def less_overfitting(e: Evidence) -> Finding:
    """The fine-tune fits its text (KB perplexity falls) yet RAG answers unseen questions better."""
    fitted = e.kb_perplexity["ft"] < e.kb_perplexity["base"]
    found = _by_intervals(e.mc["rag"], e.mc["ft"],
                          f"KB-text perplexity {e.kb_perplexity['base']:.1f} → {e.kb_perplexity['ft']:.1f} "
                          f"after fine-tuning; multiple choice RAG {_fmt(e.mc['rag'])} vs FT {_fmt(e.mc['ft'])}")
    if found.verdict == SUPPORTED and not fitted:
        return Finding(INCONCLUSIVE, found.evidence, found.direction)
    return found


def combined(e: Evidence) -> Finding:
    if e.raft is None:
        return _not_measured("notebook 06 has not saved its results with these settings")
    raft, base = e.raft["RAFT LoRA + RAG"], e.raft["base + RAG"]
    found = _by_intervals(raft, base, f"free-form on held-out articles: RAFT LoRA + RAG {_fmt(raft)} vs "
                                      f"base + RAG {_fmt(base)}")
    if "KB fine-tune + RAG" in e.raft:
        found = Finding(found.verdict, f"{found.evidence}; KB fine-tune + RAG {_fmt(e.raft['KB fine-tune + RAG'])}",
                        found.direction)
    return found


def more_creative(e: Evidence) -> Finding:
    rag, base = e.diversity["rag"], e.diversity["base"]
    return _by_intervals(rag, base, f"distinct-2 of sampled answers to open prompts: with retrieval "
                                    f"{_fmt(rag)}, without {_fmt(base)}")


def less_creative(e: Evidence) -> Finding:
    rag, base = e.diversity["rag"], e.diversity["base"]
    return _by_intervals(base, rag, f"distinct-2 of sampled answers to open prompts: with retrieval "
                                    f"{_fmt(rag)}, without {_fmt(base)}")


# ---- fine-tuning ----------------------------------------------------------------------------------

def forgetting(e: Evidence) -> Finding:
    """Held-out WikiText perplexity rises while the model fine-tunes on the articles."""
    change = relative_change(e.wikitext_perplexity["base"], e.wikitext_perplexity["ft"])
    steps = e.wikitext_perplexity.get("steps")
    evidence = (f"WikiText perplexity {e.wikitext_perplexity['base']:.1f} → "
                f"{e.wikitext_perplexity['ft']:.1f} ({change:+.1%})"
                + (f" over {steps} steps on the articles" if steps else ""))
    if change > PERPLEXITY_TOLERANCE:
        return Finding(SUPPORTED, evidence, True)
    if change < -PERPLEXITY_TOLERANCE:
        return Finding(CONTRADICTED, evidence, False)
    return Finding(INCONCLUSIVE, evidence, _lean(change, 0.0))


def narrow_task(e: Evidence) -> Finding:
    if e.tasks is None:
        return _not_measured("notebook 07 has not saved its results with these settings")
    fine, few, zero = e.tasks["fine-tuned"], e.tasks["few-shot"], e.tasks["zero-shot"]
    return _by_intervals(fine, few, f"sorting customer messages, macro-F1: the best fine-tuned classifier "
                                    f"{_fmt(fine)} vs retrieval few-shot {_fmt(few)} (zero-shot {_fmt(zero)})")


def new_label_without_retraining(e: Evidence) -> Finding:
    if e.new_intent is None:
        return _not_measured("notebook 07 has not saved its results with these settings")
    knn, old = e.new_intent["kNN"], e.new_intent["fine-tuned"]
    evidence = (f"recall on a new intent after indexing 10 examples: kNN {knn:.2f}; the fine-tuned "
                f"classifier {old:.2f} until it is trained again")
    if knn > 0 and old == 0:
        return Finding(SUPPORTED, evidence, True)
    return Finding(CONTRADICTED if knn <= old else INCONCLUSIVE, evidence, _lean(knn, old))


def overfits_when_overtrained(e: Evidence) -> Finding:
    """Trained too long, validation loss climbs from its lowest point while training loss falls;
    stopping at the lowest point gives a lower loss on messages nothing was chosen on (test)."""
    if e.overtraining is None:
        return _not_measured("notebook 07 has not saved its results with these settings")
    o = e.overtraining
    overfit = (o["validation_last"] > o["validation_best"] * (1 + PERPLEXITY_TOLERANCE)
               and o["train_last"] < o["train_best"])
    fixed = o["test_best"] < o["test_last"]
    evidence = (f"a classifier trained {o['last_epoch']} epochs on a few messages: validation loss lowest "
                f"after epoch {o['best_epoch']} ({o['validation_best']:.3f}), {o['validation_last']:.3f} at "
                f"the end while training loss fell {o['train_best']:.3f} → {o['train_last']:.4f}; test loss "
                f"with early stopping {o['test_best']:.3f}, without {o['test_last']:.3f}")
    if not overfit:
        return Finding(INCONCLUSIVE, evidence + " (no over-fitting within this budget)", False)
    return Finding(SUPPORTED if fixed else CONTRADICTED, evidence, fixed)


def pretrained_start(e: Evidence) -> Finding:
    """The same architecture and budget from random weights ends far worse than from the
    pre-trained ones: the pre-training did most of the work."""
    if e.kb_perplexity.get("scratch") is None:
        return _not_measured("the from-scratch control (kb-full-scratch) was not trained")
    ft, scratch, base = e.kb_perplexity["ft"], e.kb_perplexity["scratch"], e.kb_perplexity["base"]
    evidence = (f"KB-text perplexity after the same training budget: from the pre-trained model "
                f"{ft:.1f}, from random weights {scratch:,.0f} (the pre-trained model before any "
                f"fine-tuning: {base:.1f})")
    if scratch > ft * (1 + PERPLEXITY_TOLERANCE):
        return Finding(SUPPORTED, evidence, True)
    if scratch < ft * (1 - PERPLEXITY_TOLERANCE):
        return Finding(CONTRADICTED, evidence, False)
    return Finding(INCONCLUSIVE, evidence, None)


def quicker_to_implement(e: Evidence) -> Finding:
    """Measured as compute time to a usable system: training vs building the index."""
    evidence = (f"set-up time: fine-tuning {e.train_seconds:.0f} s vs indexing the knowledge base "
                f"{e.index_seconds:.0f} s (engineering effort is not measured)")
    quicker = e.train_seconds < e.index_seconds
    return Finding(SUPPORTED if quicker else CONTRADICTED, evidence, quicker)


def fewer_parameters(e: Evidence) -> Finding:
    """LoRA trains a small share of the weights; what it costs in accuracy decides the verdict."""
    share = e.parameters["lora"] / e.parameters["full"]
    lora, full = e.mc["lora_aug"], e.mc["ft_aug"]
    evidence = (f"LoRA trains {e.parameters['lora']:,} of {e.parameters['full']:,} weights ({share:.2%}); "
                f"multiple choice LoRA+aug {_fmt(lora)} vs FT+aug {_fmt(full)}")
    if share >= 1:
        return Finding(CONTRADICTED, evidence, False)
    cost = compare_intervals(lora, full)
    return Finding(CONTRADICTED if cost < 0 else SUPPORTED, evidence, cost >= 0)


CLAIMS = (
    Claim("RAG gives domain-specific answers",
          "RAG provides domain-specific, up-to-date answers the model alone cannot give",
          "multiple choice, base model vs the same model with retrieval", domain_answers),
    Claim("RAG reduces misleading answers",
          "RAG reduces incorrect or misleading information (hallucination)",
          "free-form answers on answerable and unanswerable questions: share stating something wrong",
          fewer_misleading_answers),
    Claim("RAG depends on retrieval quality",
          "RAG depends on the quality and relevance of the retrieved documents",
          "multiple choice with the real retriever vs random chunks; with vs without a relevant chunk",
          retrieval_quality),
    Claim("RAG adapts to evolving information",
          "RAG adapts to dynamic or evolving information",
          "the updated questions after indexing the notices vs the fine-tune trained before them",
          adapts_to_change),
    Claim("RAG costs more at answer time",
          "RAG has more computational overhead at generation time; fine-tuning is less "
          "resource-demanding when answering",
          "median latency and peak memory per answer, with vs without retrieval", answer_time_overhead),
    Claim("RAG is less prone to overfitting",
          "RAG is less prone to overfitting",
          "the fine-tune's fit of its text (perplexity) vs its accuracy on questions, against RAG",
          less_overfitting),
    Claim("Fine-tuning over-fits when trained too long",
          "fine-tuning may overfit if trained excessively; the fix: stop early, or regularise",
          "notebook 07: a classifier trained far too long, losses every epoch; early stopping judged "
          "on test messages", overfits_when_overtrained, notebook="07"),
    Claim("Fine-tuning may forget",
          "fine-tuning may suffer catastrophic forgetting",
          "held-out WikiText perplexity before and during the knowledge fine-tune's recipe, trained "
          "forgetting_max_steps steps at a constant learning rate", forgetting),
    Claim("Fine-tuning wins a narrow task",
          "fine-tuning is ideal for a specific task: \"laser focus on a narrow use case\", "
          "\"text classification tasks like sentiment analysis or spam detection\"",
          "notebook 07: sorting customer messages, fine-tuned classifiers vs retrieval few-shot",
          narrow_task, notebook="07"),
    Claim("Retrieval adapts to a new task label",
          "RAG adapts without retraining (a new label, like new facts)",
          "notebook 07: recall on a new intent after indexing 10 examples, kNN vs the fine-tuned "
          "classifier", new_label_without_retraining, notebook="07"),
    Claim("Fine-tuning builds on pre-training",
          "fine-tuning needs less data and compute than training from scratch, and depends on the "
          "quality of the pre-trained model",
          "the same architecture and training budget from random weights vs from the pre-trained model",
          pretrained_start),
    Claim("Fine-tuning is quicker to implement",
          "fine-tuning is quicker to implement",
          "compute time to a usable system: training vs indexing", quicker_to_implement),
    Claim("Fine-tuning adjusts fewer parameters",
          "fine-tuning adjusts fewer parameters (parameter-efficient fine-tuning)",
          "LoRA's trainable share, and its accuracy against full fine-tuning", fewer_parameters),
    Claim("Combining both beats either alone",
          "RAG may need additional training to use retrieval well; combining both approaches "
          "gives the best results",
          "notebook 06: a reader fine-tuned to read retrieved chunks (RAFT) vs the base reader",
          combined, notebook="06"),
    Claim("RAG is more creative",
          "RAG \"can generate more creative\" responses",
          "distinct-2 over sampled answers to open prompts, with vs without retrieval", more_creative),
    Claim("RAG is less suited to creative content",
          "RAG \"may not be suitable for creative or novel content\"",
          "the same measurement, read the other way", less_creative),
)
CLAIM_BY_NAME = {claim.name: claim for claim in CLAIMS}
# Claims notebook 08 reads from another notebook's saved results: "not measured" until it ran.
MEASURED_ELSEWHERE = frozenset(claim.name for claim in CLAIMS if claim.notebook != "08")

# The directions notebook 08 asserts at every profile, smoke (CI) included: claim -> the verdict
# of the laptop reference run it follows (docs/results-laptop.md) or, for a claim measured since,
# of three smoke seeds (benchmarks/README.md, "The claims over seeds", "Forgetting over seeds").
# Claims not listed are shown with their verdict but not asserted: the two creativity claims
# differ by less than their intervals at both profiles.
EXPECTED = {
    "RAG gives domain-specific answers": SUPPORTED,
    "RAG reduces misleading answers": SUPPORTED,  # three smoke seeds (laptop: 6 answers only)
    "RAG depends on retrieval quality": SUPPORTED,
    "RAG adapts to evolving information": SUPPORTED,
    "RAG costs more at answer time": SUPPORTED,
    "RAG is less prone to overfitting": SUPPORTED,
    "Fine-tuning wins a narrow task": SUPPORTED,
    "Retrieval adapts to a new task label": SUPPORTED,
    "Fine-tuning over-fits when trained too long": SUPPORTED,
    "Fine-tuning may forget": SUPPORTED,  # three smoke seeds, both WikiText sources
    "Fine-tuning builds on pre-training": SUPPORTED,
    "Fine-tuning is quicker to implement": CONTRADICTED,
    "Fine-tuning adjusts fewer parameters": SUPPORTED,
    "Combining both beats either alone": SUPPORTED,
}


def raft_evidence(document: dict | None) -> dict[str, dict] | None:
    """Notebook 06's pooled free-form accuracies from its saved results (``results.load_results``
    with ``stem="raft"``), or None when it has not saved any."""
    return dict(document["pooled"]) if document else None


def task_evidence(document: dict | None) -> dict[str, dict | None]:
    """The :class:`Evidence` fields notebook 07's saved results (``stem="tasks"``) give:
    ``tasks`` (macro-F1 intervals of the best fine-tuned classifier, few-shot and zero-shot),
    ``new_intent`` (recall on the new intent of kNN and of the classifier trained before it) and
    ``overtraining`` (its early-stopping losses); each None when it has not saved any."""
    if not document:
        return {"tasks": None, "new_intent": None, "overtraining": None}
    rows = {row["system"]: row for row in document["table"]}

    def interval(row: dict) -> dict:
        return {"value": row["macro_f1"], "low": row["macro_f1_low"], "high": row["macro_f1_high"],
                "n": row["n"]}

    best = max((row for name, row in rows.items() if name.startswith("fine-tuned")),
               key=lambda row: row["macro_f1"])
    new = {row["system"]: row for row in document["new_intent"]}

    def recall(row: dict) -> float:
        return next(value for key, value in row.items() if key.endswith(" recall"))

    return {"tasks": {"fine-tuned": interval(best), "few-shot": interval(rows["few-shot"]),
                      "zero-shot": interval(rows["zero-shot"])},
            "new_intent": {"kNN": recall(new["kNN"]), "fine-tuned": recall(new["fine-tuned (10 intents)"])},
            "overtraining": document.get("early_stopping")}


def claims_table(evidence: Evidence):
    """One row per claim, indexed by its name: ``article`` (its words), ``experiment``,
    ``evidence`` (measured), ``verdict`` (computed), ``direction`` (the point estimates lean its
    way) and ``asserted`` (the direction notebook 08 checks, from :data:`EXPECTED`, or "")."""
    import pandas as pd

    rows = []
    for claim in CLAIMS:
        found = claim.judge(evidence)
        rows.append({"claim": claim.name, "article": claim.article, "experiment": claim.experiment,
                     "evidence": found.evidence, "verdict": found.verdict, "direction": found.direction,
                     "asserted": EXPECTED.get(claim.name, "")})
    return pd.DataFrame(rows).set_index("claim")


def direction_holds(table, name: str) -> bool:
    """Whether claim ``name``'s measured direction is the one :data:`EXPECTED` asserts for it:
    the claim's way for "supported", the other way for "contradicted"."""
    if name not in EXPECTED:
        raise KeyError(f"{name!r} has no asserted direction; asserted: {sorted(EXPECTED)}")
    direction = table.loc[name, "direction"]
    if direction is None or direction != direction:  # not measured, or no lean either way (None / NaN)
        return False
    return bool(direction) == (EXPECTED[name] == SUPPORTED)


def flipped(table) -> list[str]:
    """The claims of :data:`EXPECTED` whose measured direction is not the asserted one; claims
    not measured in this run (their notebook has not saved results) are left out."""
    return [name for name in EXPECTED
            if table.loc[name, "verdict"] != NOT_MEASURED and not direction_holds(table, name)]
