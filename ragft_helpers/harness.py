"""The harness: one function scores any system (model, with or without retrieval) on the same
questions with the same rules, plus bootstrap intervals and a side-by-side comparison."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from ragft_helpers import score_cache
from ragft_helpers.config import Settings
from ragft_helpers.checkpoints import text_fingerprint
from ragft_helpers.lm import generate, joined_text, perplexity
from ragft_helpers.machine import PeakRSS, percentiles, release_freed_memory
from ragft_helpers.qa import Question
from ragft_helpers.rag import answer, answer_many, build_prompt, has_chat_template
from ragft_helpers.retrieval import DEFAULT_METHOD, retrieve
from ragft_helpers.retrieval_metrics import is_relevant
from ragft_helpers.scoring import (choose_after, choose_option, choose_options, distinct_n, judge,
                                   normalise, option_ids, option_order)
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
    method: str = DEFAULT_METHOD  # retrieval method; "random" is the control of bad retrieval


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


def _choice_prompt(system: System, question: Question,
                   settings: Settings) -> tuple[str, list[int], bool | None]:
    """The multiple-choice prompt for ``question`` (with the retrieved chunks for a retrieval
    system), its option order (:func:`option_order`) and whether a chunk of the question's source
    sections reached the prompt (``None`` without retrieval)."""
    chunks = (retrieve(question.question, _k(system, settings), system.collection, settings=settings,
                       method=system.method) if system.retrieval else [])
    order = option_order(1 + len(question.distractors), settings.seed, question.id)
    relevant = any(is_relevant(c.metadata, question) for c in chunks) if system.retrieval else None
    return build_prompt(question.question, chunks, system.tokenizer), order, relevant


def _choice_row(question: Question, order: list[int], relevant: bool | None, index: int,
                scores: list[float]) -> dict:
    options = [question.answer, *question.distractors]
    return {"mc_choice": options[order[index]], "mc_correct": order[index] == 0,
            "mc_margin": scores[index] - max(s for i, s in enumerate(scores) if i != index),
            "context_relevant": relevant}


def multiple_choice(system: System, question: Question, settings: Settings) -> dict:
    """Score one question by :func:`choose_option`; options shuffled by :func:`option_order`."""
    prompt, order, relevant = _choice_prompt(system, question, settings)
    options = [question.answer, *question.distractors]
    index, scores = choose_option(system.model, system.tokenizer, prompt, [options[i] for i in order])
    return _choice_row(question, order, relevant, index, scores)


def multiple_choice_many(system: System, questions: Sequence[Question], settings: Settings,
                         *, batch_size: int | None = None) -> list[dict]:
    """:func:`multiple_choice` for many questions, scored ``batch_size`` per padded forward pass
    (:func:`choose_options`; default: the profile's ``choice_batch_size``)."""
    prompts = [_choice_prompt(system, question, settings) for question in questions]
    items = [(prompt, [[q.answer, *q.distractors][i] for i in order])
             for q, (prompt, order, _) in zip(questions, prompts)]
    chosen = choose_options(system.model, system.tokenizer, items,
                            batch_size=batch_size or settings.profile.choice_batch_size)
    return [_choice_row(q, order, relevant, index, scores)
            for q, (_, order, relevant), (index, scores) in zip(questions, prompts, chosen)]


def evaluate_system(system: System, questions: Sequence[Question], settings, *,
                    free_form: Sequence[Question] | None = None,
                    multiple_choice_too: bool = True, reuse: bool = True) -> SystemResult:
    """Score ``system`` on ``questions``: one row per question.

    Multiple choice (``mc_correct``) for answerable questions unless ``multiple_choice_too`` is
    off; greedy free-form answers (``correct``, ``abstained``, ``hallucinated``) for
    ``free_form`` (default: all of ``questions``; a subset saves time), generated in batches
    (:func:`rag.answer_many`). A question asked both ways whose free-form prompt is its
    multiple-choice prompt is read once: its options are scored on the keys and values the
    generation computed (:func:`choose_after`); the others are scored in batches
    (:func:`multiple_choice_many`).

    ``seconds`` is each free-form answer's cost: its retrieval and prompt time plus its share of
    its batch's generation, split into ``retrieval_s``, ``prefill_s`` and ``decode_s`` (summed
    over the answers, the run's time). One answer asked alone (:func:`rag.answer`, the chat)
    waits longer than its share. Peak resident memory is sampled throughout; what scoring freed
    is given back to the system afterwards, so the next model does not start on top of it.

    With ``reuse``, a result saved by an earlier call with the same model weights, index,
    settings and questions is reloaded instead (``reloaded`` is then true, and its times and
    memory are those measured then; :mod:`score_cache`). Otherwise only the rows no earlier call
    scored for this system (whatever its name; ``k=None`` and the profile's ``rag_k`` alike) are
    scored: ``seconds`` then adds up what every row cost when it was scored, and
    ``peak_memory_mb`` is this call's (the rows' when it scored none: resident memory belongs to
    a process, not to a row). ``reuse=False`` always scores everything.
    """
    import pandas as pd

    free_ids = {q.id for q in (questions if free_form is None else free_form)}
    kept: dict = {}  # (question key, "mc" | "free") -> (row values, seconds, peak MB)
    saved = kept_path = None
    if reuse:
        fingerprint = score_cache.system_fingerprint(
            replace(system, k=_k(system, settings) if system.retrieval else None), settings)
        saved = score_cache.path_of(system, questions, settings, fingerprint=fingerprint,
                                    free_form=sorted(free_ids),
                                    multiple_choice_too=multiple_choice_too)
        earlier = score_cache.load(saved)
        if earlier is not None:
            return replace(earlier, reloaded=True)
        kept_path = score_cache.rows_path(fingerprint, settings)
        kept = score_cache.load(kept_path) or {}
    keys = [score_cache.item_key(q) for q in questions]
    chosen = [n for n, q in enumerate(questions) if q.answerable and multiple_choice_too]
    asked = [n for n, q in enumerate(questions) if q.id in free_ids]
    to_choose = [n for n in chosen if (keys[n], "mc") not in kept]
    to_ask = [n for n in asked if (keys[n], "free") not in kept]
    new: dict = {}
    with PeakRSS() as memory:
        # A question asked both ways is read once: its options are scored on the keys and values
        # free-form generation computed for the same prompt.
        start = time.perf_counter()
        both = {n: _choice_prompt(system, questions[n], settings)
                for n in set(to_choose).intersection(to_ask)}
        shared_seconds = time.perf_counter() - start  # the prompts, then the options' own passes

        def score_options(position: int, ids: list[int], cache) -> None:
            nonlocal shared_seconds
            n = to_ask[position]
            if n not in both:
                return
            begun = time.perf_counter()
            prompt, order, relevant = both.pop(n)
            if system.tokenizer(prompt, add_special_tokens=False)["input_ids"] == ids:
                options = [[questions[n].answer, *questions[n].distractors][i] for i in order]
                index, scores = choose_after(system.model, system.tokenizer, cache, ids[-1],
                                             option_ids(system.tokenizer, prompt, options))
                new[(keys[n], "mc")] = (_choice_row(questions[n], order, relevant, index, scores),
                                        None)
            shared_seconds += time.perf_counter() - begun

        replies = answer_many([questions[n].question for n in to_ask], model=system.model,
                              tokenizer=system.tokenizer, collection=system.collection,
                              k=_k(system, settings), use_retrieval=system.retrieval,
                              method=system.method, settings=settings,
                              on_prefill=score_options) if to_ask else []
        shared = [n for n in to_choose if (keys[n], "mc") in new]
        for n in shared:
            new[(keys[n], "mc")] = (new[(keys[n], "mc")][0], shared_seconds / len(shared))
        rest = [n for n in to_choose if (keys[n], "mc") not in new]
        start = time.perf_counter()
        choices = multiple_choice_many(system, [questions[n] for n in rest], settings) if rest else []
        share = (time.perf_counter() - start) / max(1, len(rest))
        for n, choice in zip(rest, choices):
            new[(keys[n], "mc")] = (choice, share)
        for n, reply in zip(to_ask, replies):
            question = questions[n]
            correct, abstained = judge(reply.text, question, abstained=reply.abstained)
            new[(keys[n], "free")] = ({
                "answer": reply.text, "abstained": abstained, "correct": correct,
                "hallucinated": not question.answerable and not abstained,
                "seconds": reply.total_ms / 1000, "retrieval_s": reply.retrieval_ms / 1000,
                "prefill_s": reply.prefill_ms / 1000, "decode_s": reply.decode_ms / 1000,
                "sources": [c.label for c in reply.sources]}, reply.total_ms / 1000)
    kept.update({key: (values, seconds, memory.peak_mb) for key, (values, seconds) in new.items()})
    if kept_path is not None and new:
        score_cache.save(kept_path, kept)
    if new:  # generation's transient buffers: give them back before the next model runs
        release_freed_memory()
    rows = [{"system": system.name, "id": q.id, "type": q.type, "question": q.question,
             "expected": q.answer} for q in questions]
    used = [(n, (keys[n], "mc")) for n in chosen] + [(n, (keys[n], "free")) for n in asked]
    for n, key in used:
        rows[n].update(kept[key][0])
    frame = pd.DataFrame(rows)
    for column, kind in (("mc_correct", "boolean"), ("context_relevant", "boolean"),
                         ("correct", "boolean"),
                         ("abstained", "boolean"), ("hallucinated", "boolean"), ("seconds", float),
                         ("retrieval_s", float), ("prefill_s", float), ("decode_s", float)):
        frame[column] = frame[column].astype(kind) if column in frame else pd.Series(dtype=kind)
    costs = [kept[key] for _, key in used]
    peak_mb = memory.peak_mb if new else max((peak for _, _, peak in costs), default=memory.peak_mb)
    result = SystemResult(system.name, frame, peak_mb, sum(seconds for _, seconds, _ in costs),
                          reloaded=bool(used) and not new)
    if saved is not None:
        score_cache.save(saved, result)
    return result


# ---- open prompts: how varied the answers are ----------------------------------------------------

def sampled_answers(system: System, prompts: Sequence[str], settings: Settings, *,
                    samples: int | None = None, temperature: float = 1.0, top_p: float = 0.95):
    """``samples`` answers (default: the profile's ``open_samples``) sampled for each prompt, with
    the system's retrieved chunks in the prompt for a retrieval system: one row per answer
    (``system``, ``prompt``, ``sample``, ``answer``). Sample ``i`` of every prompt is drawn in one
    padded batch seeded ``settings.seed + i``, so every system draws with the same seeds. The answers are saved
    (:func:`~ragft_helpers.score_cache.reused`): a re-run reloads them."""
    samples = samples or settings.profile.open_samples
    return score_cache.reused(
        f"sampled-{system.name}", settings,
        lambda: _sampled_answers(system, prompts, settings, samples, temperature, top_p),
        system=system, prompts=list(prompts), samples=samples, temperature=temperature, top_p=top_p)


def _sampled_answers(system, prompts, settings, samples, temperature, top_p):
    import pandas as pd

    texts = [build_prompt(prompt, retrieve(prompt, _k(system, settings), system.collection,
                                           settings=settings, method=system.method)
                          if system.retrieval else [], system.tokenizer) for prompt in prompts]
    # sample i of every prompt in one batch, seeded settings.seed + i
    answers = [generate(system.model, system.tokenizer, texts, do_sample=True,
                        temperature=temperature, top_p=top_p, seed=settings.seed + i,
                        max_new_tokens=settings.profile.max_new_tokens, batch_size=len(texts) or 1,
                        add_special_tokens=not has_chat_template(system.tokenizer))
               for i in range(samples)]
    rows = [{"system": system.name, "prompt": prompt, "sample": i, "answer": answers[i][n]}
            for n, prompt in enumerate(prompts) for i in range(samples)]
    return pd.DataFrame(rows, columns=["system", "prompt", "sample", "answer"])


def perplexity_table(models: dict[str, Any], tokenizer, texts: dict[str, Any], settings: Settings):
    """Each model's perplexity on each text (a string or a dataset split) with the profile's
    budgets (``block_size`` windows, ``eval_stride``, ``eval_max_tokens``): one row per model, a
    column per text. Saved (:func:`~ragft_helpers.score_cache.reused`): a re-run reloads it."""
    import pandas as pd

    p = settings.profile

    def compute():
        return pd.DataFrame([{"model": name, **{
            column: perplexity(model, tokenizer, text, max_length=p.block_size, stride=p.eval_stride,
                               max_tokens=p.eval_max_tokens, progress=False).perplexity
            for column, text in texts.items()}} for name, model in models.items()]).set_index("model")

    return score_cache.reused("perplexities", settings, compute, models=models, tokenizer=tokenizer,
                              texts={column: text_fingerprint([joined_text(text)])
                                     for column, text in texts.items()})


def diversity(rows, n: int = 2, seed: int = 0) -> dict:
    """Distinct-n of each prompt's sampled answers (:func:`sampled_answers` rows), averaged over
    the prompts, with a bootstrap interval over prompts: ``value``, ``low``, ``high``, ``n``."""
    per_prompt = [distinct_n(group["answer"].tolist(), n)
                  for _, group in rows.groupby("prompt", sort=False)]
    per_prompt = [value for value in per_prompt if value == value]  # prompts with an n-gram
    mean, low, high = bootstrap_ci(per_prompt, seed=seed)
    return {"value": mean, "low": low, "high": high, "n": len(per_prompt)}


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
    ``hallucination`` (unanswerable), ``misleading`` (every free-form answer that states
    something wrong: a wrong answer to an answerable question, or any answer to an unanswerable
    one) and, for a retrieval system, ``mc_context_relevant`` / ``mc_context_missing``
    (multiple choice when a chunk of the question's source sections reached the prompt, or
    not)."""
    import pandas as pd

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
    misleading = pd.concat([~free["correct"] & ~free["abstained"], unanswerable["hallucinated"]])
    result["misleading"] = _metric(misleading, seed)
    scored = (answerable.dropna(subset=["mc_correct", "context_relevant"])
              if "context_relevant" in answerable else answerable.iloc[:0])
    if len(scored):
        relevant = scored["context_relevant"].astype(bool)
        result["mc_context_relevant"] = _metric(scored[relevant]["mc_correct"], seed)
        result["mc_context_missing"] = _metric(scored[~relevant]["mc_correct"], seed)
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


def evaluate_phrasings_loaded(name: str, load: Callable[[], Any], questions: Sequence[Question],
                              settings: Settings, **options) -> dict[tuple[str, str], SystemResult]:
    """:func:`evaluate_phrasings` of one system whose model is loaded for this call only:
    ``load()`` returns anything with ``model`` and ``tokenizer``; ``options`` are the other
    :class:`System` fields. The model is dropped and its memory given back
    (:func:`~ragft_helpers.machine.release_freed_memory`) before this returns, so a table of many
    fine-tuned models holds one of them at a time."""
    if not callable(load) or hasattr(load, "parameters") or hasattr(load, "model"):  # a model, not a loader
        raise TypeError(f"load must be a function that loads the model, e.g. "
                        f"lambda: raft.load_reader('raft-full', settings); got {type(load).__name__}. "
                        f"A model already loaded can be scored with evaluate_phrasings.")
    loaded = load()
    results = evaluate_phrasings([System(name, loaded.model, loaded.tokenizer, **options)],
                                 questions, settings)
    del loaded
    release_freed_memory()
    return results


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
