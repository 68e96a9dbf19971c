"""The harness: one function scores any system (model, with or without retrieval) on the same
questions with the same rules, plus bootstrap intervals and a side-by-side comparison."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from ragft_helpers.config import Settings
from ragft_helpers.machine import PeakRSS, percentiles
from ragft_helpers.qa import Question
from ragft_helpers.rag import answer, build_prompt
from ragft_helpers.retrieval import retrieve
from ragft_helpers.scoring import choose_option, judge, normalise, option_order
from ragft_helpers.store import MiniLMEmbeddingFunction


def score_answers(questions: Sequence[Question], respond: Callable[[str], str]):
    """Ask ``respond`` every question; one row each with correctness, abstention and latency.

    ``correct``: an answerable question's answer is contained; an unanswerable one abstained.
    """
    import pandas as pd

    rows = []
    for question in questions:
        start = time.perf_counter()
        text = respond(question.question)
        seconds = time.perf_counter() - start
        correct, abstained = judge(text, question)
        rows.append({"id": question.id, "type": question.type, "question": question.question,
                     "expected": question.answer, "answer": text, "correct": correct,
                     "abstained": abstained, "seconds": seconds})
    return pd.DataFrame(rows)


# ---- the harness: one function scores any system -------------------------------------------------

@dataclass
class System:
    """A model to score, with or without retrieval (``collection`` and ``k`` when with)."""

    name: str
    model: Any
    tokenizer: Any
    retrieval: bool = False
    collection: Any = None
    k: int | None = None  # chunks per prompt; None = the profile's rag_k


@dataclass
class SystemResult:
    name: str
    rows: Any  # pandas DataFrame, one row per question
    peak_memory_mb: float
    seconds: float

    def summary(self) -> dict:
        return summarise(self.rows)


def _k(system: System, settings: Settings) -> int:
    return settings.profile.rag_k if system.k is None else system.k


def multiple_choice(system: System, question: Question, settings: Settings) -> dict:
    """Score one question by :func:`choose_option`; options shuffled by :func:`option_order`."""
    options = [question.answer, *question.distractors]
    order = option_order(len(options), settings.seed, question.id)
    shuffled = [options[i] for i in order]
    chunks = (retrieve(question.question, _k(system, settings), system.collection, settings=settings)
              if system.retrieval else [])
    prompt = build_prompt(question.question, chunks, system.tokenizer)
    index, scores = choose_option(system.model, system.tokenizer, prompt, shuffled)
    return {"mc_choice": shuffled[index], "mc_correct": order[index] == 0,
            "mc_margin": scores[index] - max(s for i, s in enumerate(scores) if i != index)}


def evaluate_system(system: System, questions: Sequence[Question], settings, *,
                    free_form: Sequence[Question] | None = None,
                    multiple_choice_too: bool = True) -> SystemResult:
    """Score ``system`` on ``questions``: one row per question.

    Multiple choice (``mc_correct``) for answerable questions unless ``multiple_choice_too`` is
    off; greedy free-form answers (``correct``, ``abstained``, ``hallucinated``, ``seconds``) for
    ``free_form`` (default: all of ``questions``; a subset saves time). Peak resident memory is
    sampled throughout.
    """
    import pandas as pd

    free_ids = {q.id for q in (questions if free_form is None else free_form)}
    rows = []
    start = time.perf_counter()
    with PeakRSS() as memory:
        for question in questions:
            row: dict[str, Any] = {"system": system.name, "id": question.id, "type": question.type,
                                   "question": question.question, "expected": question.answer}
            if question.answerable and multiple_choice_too:
                row.update(multiple_choice(system, question, settings))
            if question.id in free_ids:
                reply = answer(question.question, model=system.model, tokenizer=system.tokenizer,
                               collection=system.collection, k=_k(system, settings),
                               use_retrieval=system.retrieval, settings=settings)
                correct, abstained = judge(reply.text, question, abstained=reply.abstained)
                row.update({"answer": reply.text, "abstained": abstained, "correct": correct,
                            "hallucinated": not question.answerable and not abstained,
                            "seconds": (reply.retrieval_ms + reply.generation_ms) / 1000,
                            "sources": [c.label for c in reply.sources]})
            rows.append(row)
    frame = pd.DataFrame(rows)
    for column, kind in (("mc_correct", "boolean"), ("correct", "boolean"),
                         ("abstained", "boolean"), ("hallucinated", "boolean"), ("seconds", float)):
        frame[column] = frame[column].astype(kind) if column in frame else pd.Series(dtype=kind)
    return SystemResult(system.name, frame, memory.peak_mb, time.perf_counter() - start)


# ---- statistics ----------------------------------------------------------------------------------

def bootstrap_ci(values: Sequence[float], n: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap interval of the mean at level ``1 - alpha``.

    An empty sample gives NaNs.
    """
    import numpy as np

    data = np.asarray([float(v) for v in values], dtype=float)
    if data.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n, data.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(data.mean()), float(low), float(high)


def _metric(values, seed: int) -> dict:
    values = [bool(v) for v in values]
    mean, low, high = bootstrap_ci(values, seed=seed)
    return {"value": mean, "low": low, "high": high, "n": len(values)}


def summarise(rows, seed: int = 0) -> dict:
    """Every accuracy with its bootstrap interval, plus latency percentiles, from the rows of
    :func:`evaluate_system`: ``mc`` (answerable), ``mc_<type>``, ``free`` (answerable),
    ``free_<type>``, ``false_abstention`` (answerable questions declined), ``abstention`` and
    ``hallucination`` (unanswerable)."""
    result: dict[str, Any] = {}
    answerable = rows[rows["type"] != "unanswerable"]
    result["mc"] = _metric(answerable["mc_correct"].dropna(), seed)
    free = answerable.dropna(subset=["correct"])
    result["free"] = _metric(free["correct"], seed)
    result["false_abstention"] = _metric(free["abstained"], seed)
    for type_, group in answerable.groupby("type"):
        result[f"mc_{type_}"] = _metric(group["mc_correct"].dropna(), seed)
        result[f"free_{type_}"] = _metric(group["correct"].dropna(), seed)
    unanswerable = rows[(rows["type"] == "unanswerable")].dropna(subset=["abstained"])
    result["abstention"] = _metric(unanswerable["abstained"], seed)
    result["hallucination"] = _metric(unanswerable["hallucinated"], seed)
    latency = percentiles(rows["seconds"].dropna(), (50, 95))
    result["latency_p50"], result["latency_p95"] = latency["p50"], latency["p95"]
    return result


def accuracy_table(results: Sequence[SystemResult], metrics: Sequence[str] = ("mc", "free")):
    """One row per system and metric: ``value``, ``low``, ``high``, ``n``."""
    import pandas as pd

    return pd.DataFrame([{"system": r.name, "metric": m, **r.summary().get(m, _metric([], 0))}
                         for r in results for m in metrics])


def as_phrasing(question: Question, variant: int) -> Question:
    """``question`` asked in its ``variant``-th realistic phrasing (cycling through them), with the
    same answer and sources; its id gains ``~v<n>``."""
    if not question.variants:
        return question
    n = variant % len(question.variants)
    return replace(question, id=f"{question.id}~v{n}", question=question.variants[n])


def evaluate_phrasings(systems: Sequence[System], questions: Sequence[Question],
                       settings: Settings) -> dict[tuple[str, str], SystemResult]:
    """Every system on ``questions`` as written ("canonical") and as people type them
    ("variant": each question in one of its variants, cycling through them). Multiple choice is
    scored on the canonical wording only: the options are the same for a variant."""
    phrasings = {"canonical": list(questions),
                 "variant": [as_phrasing(q, n) for n, q in enumerate(questions)]}
    return {(system.name, phrasing): evaluate_system(system, asked, settings,
                                                     multiple_choice_too=phrasing == "canonical")
            for system in systems for phrasing, asked in phrasings.items()}


def pooled_summary(results: dict[tuple[str, str], SystemResult], system: str) -> dict:
    """:func:`summarise` of one system's rows over every phrasing together."""
    import pandas as pd

    return summarise(pd.concat([r.rows for (name, _), r in results.items() if name == system],
                               ignore_index=True))


def metric_table(results: dict[tuple[str, str], SystemResult], metrics: Sequence[str]):
    """One row per (system, phrasing, metric): ``value``, ``low``, ``high``, ``n``."""
    import pandas as pd

    return pd.DataFrame([{"system": name, "phrasing": phrasing, "metric": metric,
                          **result.summary()[metric]}
                         for (name, phrasing), result in results.items() for metric in metrics])


# ---- side by side and costs ----------------------------------------------------------------------

def side_by_side(question_text: str, systems: Sequence[System], settings, *,
                 questions: Sequence[Question] = ()) -> list[dict]:
    """Ask every system ``question_text``; one row each with the answer, the retrieved sources
    and their scores, the latency, and ``right`` (``None`` unless the text is one of
    ``questions``). An unusable question gives rows carrying the error instead."""
    known = {normalise(q.question): q for q in questions}
    question = known.get(normalise(question_text))
    rows = []
    for system in systems:
        try:
            reply = answer(question_text, model=system.model, tokenizer=system.tokenizer,
                           collection=system.collection, k=_k(system, settings),
                           use_retrieval=system.retrieval, settings=settings)
        except ValueError as err:
            rows.append({"system": system.name, "answer": "", "sources": [], "ms": 0.0,
                         "right": None, "error": str(err)})
            continue
        right = None if question is None else judge(reply.text, question,
                                                    abstained=reply.abstained)[0]
        rows.append({"system": system.name, "answer": reply.text,
                     "sources": [(c.label, round(c.score, 3)) for c in reply.sources],
                     "ms": round(reply.retrieval_ms + reply.generation_ms), "right": right,
                     "error": ""})
    return rows


def estimate_index_seconds(chunk_texts: Sequence[str], sample: int = 16) -> float:
    """Seconds to embed all ``chunk_texts`` from scratch, measured on an evenly spread sample of
    ``sample`` of them and scaled (an already-built index re-embeds nothing, so it cannot be
    timed directly)."""
    embed = MiniLMEmbeddingFunction()
    embed(["warm-up"])
    step = max(1, len(chunk_texts) // sample)
    chosen = list(chunk_texts)[::step][:sample]
    start = time.perf_counter()
    embed(chosen)
    return (time.perf_counter() - start) * len(chunk_texts) / len(chosen)
