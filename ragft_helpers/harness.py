"""The harness: one function scores any system (model, with or without retrieval) on the same
questions with the same rules, plus bootstrap intervals and a side-by-side comparison."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from ragft_helpers import score_cache
from ragft_helpers.config import Settings
from ragft_helpers.machine import PeakRSS, percentiles
from ragft_helpers.qa import Question
from ragft_helpers.rag import answer, answer_many, build_prompt
from ragft_helpers.retrieval import retrieve
from ragft_helpers.scoring import choose_option, choose_options, judge, normalise, option_order
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
    reloaded: bool = False  # scored earlier with the same model, index, settings and questions

    def summary(self) -> dict:
        return summarise(self.rows)


def _k(system: System, settings: Settings) -> int:
    return settings.profile.rag_k if system.k is None else system.k


def _choice_prompt(system: System, question: Question, settings: Settings) -> tuple[str, list[int]]:
    """The multiple-choice prompt for ``question`` (with the retrieved chunks for a retrieval
    system) and its option order (:func:`option_order`)."""
    chunks = (retrieve(question.question, _k(system, settings), system.collection, settings=settings)
              if system.retrieval else [])
    order = option_order(1 + len(question.distractors), settings.seed, question.id)
    return build_prompt(question.question, chunks, system.tokenizer), order


def _choice_row(question: Question, order: list[int], index: int, scores: list[float]) -> dict:
    options = [question.answer, *question.distractors]
    return {"mc_choice": options[order[index]], "mc_correct": order[index] == 0,
            "mc_margin": scores[index] - max(s for i, s in enumerate(scores) if i != index)}


def multiple_choice(system: System, question: Question, settings: Settings) -> dict:
    """Score one question by :func:`choose_option`; options shuffled by :func:`option_order`."""
    prompt, order = _choice_prompt(system, question, settings)
    options = [question.answer, *question.distractors]
    index, scores = choose_option(system.model, system.tokenizer, prompt, [options[i] for i in order])
    return _choice_row(question, order, index, scores)


def multiple_choice_many(system: System, questions: Sequence[Question], settings: Settings,
                         *, batch_size: int | None = None) -> list[dict]:
    """:func:`multiple_choice` for many questions, scored ``batch_size`` per padded forward pass
    (:func:`choose_options`; default: the profile's ``choice_batch_size``)."""
    prompts = [_choice_prompt(system, question, settings) for question in questions]
    items = [(prompt, [[q.answer, *q.distractors][i] for i in order])
             for q, (prompt, order) in zip(questions, prompts)]
    chosen = choose_options(system.model, system.tokenizer, items,
                            batch_size=batch_size or settings.profile.choice_batch_size)
    return [_choice_row(q, order, index, scores)
            for q, (_, order), (index, scores) in zip(questions, prompts, chosen)]


def evaluate_system(system: System, questions: Sequence[Question], settings, *,
                    free_form: Sequence[Question] | None = None,
                    multiple_choice_too: bool = True, reuse: bool = True) -> SystemResult:
    """Score ``system`` on ``questions``: one row per question.

    Multiple choice (``mc_correct``) for answerable questions unless ``multiple_choice_too`` is
    off, scored in batches (:func:`multiple_choice_many`); greedy free-form answers
    (``correct``, ``abstained``, ``hallucinated``) for ``free_form`` (default: all of
    ``questions``; a subset saves time), generated in batches (:func:`rag.answer_many`).

    ``seconds`` is each free-form answer's cost: its retrieval and prompt time plus its share of
    its batch's generation, split into ``retrieval_s``, ``prefill_s`` and ``decode_s`` (summed
    over the answers, the run's time). One answer asked alone (:func:`rag.answer`, the chat)
    waits longer than its share. Peak resident memory is sampled throughout.

    With ``reuse``, a result saved by an earlier call with the same model weights, index,
    settings and questions is reloaded instead (``reloaded`` is then true, and its times and
    memory are those measured then; :mod:`score_cache`); ``reuse=False`` always scores.
    """
    import pandas as pd

    free_ids = {q.id for q in (questions if free_form is None else free_form)}
    saved = None
    if reuse:
        saved = score_cache.path_of(system, questions, settings, free_form=sorted(free_ids),
                                    multiple_choice_too=multiple_choice_too)
        earlier = score_cache.load(saved)
        if earlier is not None:
            return replace(earlier, reloaded=True)
    rows = [{"system": system.name, "id": q.id, "type": q.type, "question": q.question,
             "expected": q.answer} for q in questions]
    start = time.perf_counter()
    with PeakRSS() as memory:
        scored = [n for n, q in enumerate(questions) if q.answerable and multiple_choice_too]
        choices = multiple_choice_many(system, [questions[n] for n in scored], settings)
        for n, choice in zip(scored, choices):
            rows[n].update(choice)
        asked = [n for n, q in enumerate(questions) if q.id in free_ids]
        replies = answer_many([questions[n].question for n in asked], model=system.model,
                              tokenizer=system.tokenizer, collection=system.collection,
                              k=_k(system, settings), use_retrieval=system.retrieval,
                              settings=settings, batch_size=settings.profile.answer_batch_size)
        for n, reply in zip(asked, replies):
            question = questions[n]
            correct, abstained = judge(reply.text, question, abstained=reply.abstained)
            rows[n].update({
                "answer": reply.text, "abstained": abstained, "correct": correct,
                "hallucinated": not question.answerable and not abstained,
                "seconds": reply.total_ms / 1000, "retrieval_s": reply.retrieval_ms / 1000,
                "prefill_s": reply.prefill_ms / 1000, "decode_s": reply.decode_ms / 1000,
                "sources": [c.label for c in reply.sources]})
    frame = pd.DataFrame(rows)
    for column, kind in (("mc_correct", "boolean"), ("correct", "boolean"),
                         ("abstained", "boolean"), ("hallucinated", "boolean"), ("seconds", float),
                         ("retrieval_s", float), ("prefill_s", float), ("decode_s", float)):
        frame[column] = frame[column].astype(kind) if column in frame else pd.Series(dtype=kind)
    result = SystemResult(system.name, frame, memory.peak_mb, time.perf_counter() - start)
    if saved is not None:
        score_cache.save(saved, result)
    return result


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
    """Every accuracy with its bootstrap interval, plus percentiles of ``seconds`` (each free-form
    answer's cost, its share of batched generation included), from the rows of
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
                     "ms": round(reply.total_ms), "right": right, "error": ""})
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
