"""The claims table: each RAG-versus-fine-tuning claim of the course's source article, the
evidence measured in notebook 08 (the showdown), and a verdict computed from it.

Every verdict is a pure function of an :class:`Evidence` record. Accuracies carry bootstrap
intervals (``{"value", "low", "high", "n"}`` as from ``evaluate.summarise``); two intervals that
overlap give "inconclusive at this scale".
"""
from __future__ import annotations

from dataclasses import dataclass, field

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive at this scale"

PERPLEXITY_TOLERANCE = 0.01  # relative perplexity changes smaller than 1% count as no change
LATENCY_TOLERANCE = 0.10  # median latencies within 10% count as equal
# Tokens the base models were pre-trained on. SmolLM2-135M: "The 135M model was trained on 2
# trillion tokens" (model card of HuggingFaceTB/SmolLM2-135M, which the Instruct model was built on
# by SFT and DPO; Allal et al. 2025, "SmolLM2: When Smol Goes Big", arXiv:2502.02737). GPT-2's paper
# gives its corpus in gigabytes (40 GB of WebText), not tokens, so it has no entry: the verdict then
# says the pre-training size is unknown instead of guessing.
PRETRAINING_TOKENS = {"SmolLM2-135M-Instruct": 2_000_000_000_000,
                      "HuggingFaceTB/SmolLM2-135M-Instruct": 2_000_000_000_000}


@dataclass
class Evidence:
    """What the showdown (notebook 08) measured, keyed by role ("rag", "ft", ...) rather than by system name."""

    mc: dict[str, dict]  # role -> MC accuracy interval: base, rag, ft (plain full fine-tune)
    kb_perplexity: dict[str, float]  # "base", "ft": perplexity on knowledge-base text
    wikitext_perplexity: dict[str, float]  # "base", "ft": held-out WikiText perplexity
    latency_p50: dict[str, float]  # "base", "rag": seconds per answer
    train_seconds: float  # the fine-tune's measured training time
    index_seconds: float  # building the RAG index from scratch
    fresh: dict[str, dict]  # "rag", "ft": accuracy intervals on the "updated" questions
    ft_tokens: int  # tokens seen by the fine-tune
    model_name: str
    pretraining_tokens: dict[str, int] = field(default_factory=lambda: dict(PRETRAINING_TOKENS))


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


def overfitting(e: Evidence) -> tuple[str, str]:
    """RAG less prone to overfitting: the fine-tune fits its text (KB perplexity falls) yet RAG
    answers unseen questions better (MC intervals)."""
    fitted = e.kb_perplexity["ft"] < e.kb_perplexity["base"]
    order = compare_intervals(e.mc["rag"], e.mc["ft"])
    evidence = (f"KB-text perplexity {e.kb_perplexity['base']:.1f} → {e.kb_perplexity['ft']:.1f} "
                f"after fine-tuning; MC accuracy RAG {_fmt(e.mc['rag'])} vs FT {_fmt(e.mc['ft'])}")
    if fitted and order > 0:
        return SUPPORTED, evidence
    if order < 0:
        return CONTRADICTED, evidence
    return INCONCLUSIVE, evidence


def forgetting(e: Evidence) -> tuple[str, str]:
    """Catastrophic forgetting: held-out WikiText perplexity rises after fine-tuning."""
    change = relative_change(e.wikitext_perplexity["base"], e.wikitext_perplexity["ft"])
    evidence = (f"WikiText perplexity {e.wikitext_perplexity['base']:.1f} → "
                f"{e.wikitext_perplexity['ft']:.1f} ({change:+.1%})")
    if change > PERPLEXITY_TOLERANCE:
        return SUPPORTED, evidence
    if change < -PERPLEXITY_TOLERANCE:
        return CONTRADICTED, evidence
    return INCONCLUSIVE, evidence


def generation_overhead(e: Evidence) -> tuple[str, str]:
    """RAG costs more at answer time: its median latency exceeds the model alone's."""
    rag, base = e.latency_p50["rag"], e.latency_p50["base"]
    evidence = f"median seconds per answer: RAG {rag:.2f}, model alone {base:.2f}"
    if rag > base * (1 + LATENCY_TOLERANCE):
        return SUPPORTED, evidence
    if rag < base * (1 - LATENCY_TOLERANCE):
        return CONTRADICTED, evidence
    return INCONCLUSIVE, evidence


def quicker_to_implement(e: Evidence) -> tuple[str, str]:
    """Fine-tuning quicker to set up, measured as compute time: training vs building the index."""
    evidence = (f"set-up time: fine-tuning {e.train_seconds:.0f} s vs indexing the knowledge base "
                f"{e.index_seconds:.0f} s (engineering effort is not measured)")
    if e.train_seconds < e.index_seconds:
        return SUPPORTED, evidence
    return CONTRADICTED, evidence


def adapts_to_change(e: Evidence) -> tuple[str, str]:
    """RAG adapts to evolving information: after the updates are indexed it beats the stale
    fine-tune on the "updated" questions."""
    order = compare_intervals(e.fresh["rag"], e.fresh["ft"])
    evidence = f"updated questions: RAG after re-index {_fmt(e.fresh['rag'])} vs FT {_fmt(e.fresh['ft'])}"
    return {1: SUPPORTED, -1: CONTRADICTED}.get(order, INCONCLUSIVE), evidence


def less_than_scratch(e: Evidence) -> tuple[str, str]:
    """Fine-tuning needs less data and compute than pre-training, and still changes the model
    (KB perplexity falls)."""
    pretraining = e.pretraining_tokens.get(e.model_name)
    fitted = e.kb_perplexity["ft"] < e.kb_perplexity["base"]
    if pretraining is None:
        return INCONCLUSIVE, f"fine-tune saw {e.ft_tokens:,} tokens; pre-training size of {e.model_name} unknown"
    evidence = (f"fine-tune saw {e.ft_tokens:,} tokens, {pretraining / e.ft_tokens:,.0f}× fewer than "
                f"pre-training ({pretraining:,}, from the model card); KB-text perplexity "
                f"{e.kb_perplexity['base']:.1f} → {e.kb_perplexity['ft']:.1f}")
    if e.ft_tokens < pretraining and fitted:
        return SUPPORTED, evidence
    return (CONTRADICTED if e.ft_tokens >= pretraining else INCONCLUSIVE), evidence


CLAIMS = (
    ("RAG is less prone to overfitting", overfitting),
    ("Fine-tuning may suffer catastrophic forgetting", forgetting),
    ("RAG has more computational overhead at generation time", generation_overhead),
    ("Fine-tuning is quicker to implement", quicker_to_implement),
    ("RAG adapts to dynamic or evolving information", adapts_to_change),
    ("Fine-tuning needs less data and compute than training from scratch", less_than_scratch),
)


def claims_table(evidence: Evidence):
    """One row per claim: ``claim``, ``evidence`` (measured), ``verdict`` (computed)."""
    import pandas as pd

    rows = []
    for claim, judge in CLAIMS:
        verdict, measured = judge(evidence)
        rows.append({"claim": claim, "evidence": measured, "verdict": verdict})
    return pd.DataFrame(rows)


def expectations(summaries: dict[str, dict], perplexities):
    """A table of what the course expects at the laptop profile: ``expectation``, ``measured``
    (this run's values) and ``holds``.

    ``summaries``: system name → :func:`ragft_helpers.evaluate.summarise` result (needs "base",
    "RAG", "FT", "FT+aug"); ``perplexities``: a frame indexed by model ("base", "kb-full") with
    "KB-text perplexity" and "WikiText perplexity" columns.
    """
    import pandas as pd

    def mc(system: str, metric: str = "mc") -> float:
        return summaries[system][metric]["value"]

    kb = perplexities["KB-text perplexity"]
    wiki = perplexities["WikiText perplexity"]
    forgetting = relative_change(wiki["base"], wiki["kb-full"])
    rows = [
        ("RAG beats the base model on single-hop questions (MC)",
         f"{mc('RAG', 'mc_single-hop'):.2f} vs {mc('base', 'mc_single-hop'):.2f}",
         mc("RAG", "mc_single-hop") > mc("base", "mc_single-hop")),
        ("RAG beats plain fine-tuning on single-hop questions (MC)",
         f"{mc('RAG', 'mc_single-hop'):.2f} vs {mc('FT', 'mc_single-hop'):.2f}",
         mc("RAG", "mc_single-hop") > mc("FT", "mc_single-hop")),
        ("fine-tuning lowers perplexity on knowledge-base text",
         f"{kb['base']:.1f} → {kb['kb-full']:.1f}", kb["kb-full"] < kb["base"]),
        ("augmentation raises fine-tuning's knowledge score (MC)",
         f"FT+aug {mc('FT+aug'):.2f} vs FT {mc('FT'):.2f}", mc("FT+aug") > mc("FT")),
        ("forgetting is measurable (WikiText perplexity moves by more than "
         f"{PERPLEXITY_TOLERANCE:.0%})", f"{wiki['base']:.1f} → {wiki['kb-full']:.1f} ({forgetting:+.1%})",
         abs(forgetting) > PERPLEXITY_TOLERANCE),
    ]
    return pd.DataFrame(rows, columns=["expectation", "measured", "holds"])
