"""Scoring answers against the question set: one set of rules for every system."""
from __future__ import annotations

import json
import random
import re
import time
import unicodedata
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ragft_helpers.qa import Question

_ABSTENTION = re.compile(
    r"\b(i\s+(do\s*n[o']?t|don't|cannot|can't|am\s+not\s+sure)\s+(know|say|tell|find|answer)"
    r"|not\s+(mentioned|stated|provided|specified|given|available)"
    r"|(no|not\s+enough)\s+information"
    r"|does\s+not\s+(say|mention|specify|state))",
    re.IGNORECASE)


def normalise(text: str) -> str:
    """Lower case; punctuation dropped except between digits (£14.50, 07:45, 1,200)."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = re.sub(r"[\"()\[\]*]|(?<!\d)[.,:;!?]|[.,:;!?](?!\d)", " ", text)
    return " ".join(text.split())


def contains_answer(text: str, question: Question) -> bool:
    """The normalised answer, or an alias, occurs in the normalised text as whole words."""
    haystack = f" {normalise(text)} "
    return any(f" {normalise(option)} " in haystack
               for option in (question.answer, *question.aliases) if option)


def is_abstention(text: str) -> bool:
    """The answer declines ("I don't know", "the context does not say", ...)."""
    return bool(_ABSTENTION.search(text))


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
        abstained = is_abstention(text)
        correct = contains_answer(text, question) if question.answerable else abstained
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
    k: int = 4


@dataclass
class SystemResult:
    name: str
    rows: Any  # pandas DataFrame, one row per question
    peak_memory_mb: float
    seconds: float

    def summary(self) -> dict:
        return summarise(self.rows)


def option_order(n: int, seed: int, key: str) -> list[int]:
    """A seeded permutation of ``range(n)`` for one question (``key``), same on every run."""
    order = list(range(n))
    random.Random(f"{seed}:{key}").shuffle(order)
    return order


def choose_option(model, tokenizer, prompt: str, options: Sequence[str]) -> tuple[int, list[float]]:
    """The option with the highest mean log-probability per option token after ``prompt``.

    Length-normalised log-likelihood, as in Ovadia et al. (EMNLP 2024). The prompt is encoded
    once; the options run as one batch on its cached keys and values. Returns the index and every
    option's score.
    """
    import torch

    device = next(model.parameters()).device
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joiner = "" if prompt[-1:].isspace() else " "
    option_ids = [tokenizer(joiner + option, add_special_tokens=False)["input_ids"] for option in options]
    width = max(len(ids) for ids in option_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = torch.tensor([ids + [pad] * (width - len(ids)) for ids in option_ids], device=device)
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in option_ids], device=device)
    n = len(options)
    with torch.inference_mode():
        head = model(torch.tensor([prompt_ids], device=device), use_cache=True)
        cache = head.cache
        cache.batch_repeat_interleave(n)
        attention = torch.cat([torch.ones(n, len(prompt_ids), dtype=mask.dtype, device=device), mask], 1)
        logits = model(batch, cache=cache, attention_mask=attention).logits.float()
    first = head.logits[0, -1].float().log_softmax(-1)  # predicts each option's first token
    rest = logits[:, :-1].log_softmax(-1)  # position i predicts option token i + 1
    scores = []
    for row, ids in enumerate(option_ids):
        total = first[ids[0]].item() + sum(rest[row, i, ids[i + 1]].item() for i in range(len(ids) - 1))
        scores.append(total / len(ids))
    return max(range(n), key=scores.__getitem__), scores


def _retrieved(system: System, question: str):
    from ragft_helpers.rag import retrieve

    return retrieve(question, system.k, system.collection) if system.retrieval else []


def multiple_choice(system: System, question: Question, seed: int) -> dict:
    """Score one question by :func:`choose_option`; options shuffled by :func:`option_order`."""
    from ragft_helpers.rag import build_prompt

    options = [question.answer, *question.distractors]
    order = option_order(len(options), seed, question.id)
    shuffled = [options[i] for i in order]
    prompt = build_prompt(question.question, _retrieved(system, question.question), system.tokenizer)
    index, scores = choose_option(system.model, system.tokenizer, prompt, shuffled)
    return {"mc_choice": shuffled[index], "mc_correct": order[index] == 0,
            "mc_margin": scores[index] - max(s for i, s in enumerate(scores) if i != index)}


def evaluate_system(system: System, questions: Sequence[Question], settings, *,
                    free_form: Sequence[Question] | None = None) -> SystemResult:
    """Score ``system`` on ``questions``: one row per question.

    Multiple choice (``mc_correct``) for answerable questions; greedy free-form answers
    (``correct``, ``abstained``, ``hallucinated``, ``seconds``) for ``free_form`` (default: all
    of ``questions``; a subset saves time). Peak resident memory is sampled throughout.
    """
    import pandas as pd

    from ragft_helpers.knowledge import PeakRSS
    from ragft_helpers.rag import answer

    free_ids = {q.id for q in (questions if free_form is None else free_form)}
    rows = []
    start = time.perf_counter()
    with PeakRSS() as memory:
        for question in questions:
            row: dict[str, Any] = {"system": system.name, "id": question.id, "type": question.type,
                                   "question": question.question, "expected": question.answer}
            if question.answerable:
                row.update(multiple_choice(system, question, settings.seed))
            if question.id in free_ids:
                reply = answer(question.question, model=system.model, tokenizer=system.tokenizer,
                               collection=system.collection, k=system.k,
                               use_retrieval=system.retrieval, settings=settings)
                abstained = reply.abstained or is_abstention(reply.text)
                row.update({"answer": reply.text, "abstained": abstained,
                            "correct": contains_answer(reply.text, question) if question.answerable
                            else abstained,
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
    ``free_<type>``, ``abstention`` and ``hallucination`` (unanswerable)."""
    import numpy as np

    result: dict[str, Any] = {}
    answerable = rows[rows["type"] != "unanswerable"]
    result["mc"] = _metric(answerable["mc_correct"].dropna(), seed)
    free = answerable.dropna(subset=["correct"])
    result["free"] = _metric(free["correct"], seed)
    for type_, group in answerable.groupby("type"):
        result[f"mc_{type_}"] = _metric(group["mc_correct"].dropna(), seed)
        result[f"free_{type_}"] = _metric(group["correct"].dropna(), seed)
    unanswerable = rows[(rows["type"] == "unanswerable")].dropna(subset=["abstained"])
    result["abstention"] = _metric(unanswerable["abstained"], seed)
    result["hallucination"] = _metric(unanswerable["hallucinated"], seed)
    seconds = rows["seconds"].dropna().to_numpy(dtype=float)
    result["latency_p50"] = float(np.percentile(seconds, 50)) if seconds.size else float("nan")
    result["latency_p95"] = float(np.percentile(seconds, 95)) if seconds.size else float("nan")
    return result


def accuracy_table(results: Sequence[SystemResult], metrics: Sequence[str] = ("mc", "free")):
    """One row per system and metric: ``value``, ``low``, ``high``, ``n``."""
    import pandas as pd

    return pd.DataFrame([{"system": r.name, "metric": m, **r.summary().get(m, _metric([], 0))}
                         for r in results for m in metrics])


# ---- results on disk -----------------------------------------------------------------------------

def package_versions(names: Sequence[str] = ("torch", "transformers", "peft", "chromadb",
                                             "datasets", "numpy", "pandas")) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def results_path(settings, results_dir: Path | None = None, stem: str = "showdown") -> Path:
    """``<results_dir or RAGFT_CACHE_DIR/results>/<stem>-<profile>.json``: one file per profile."""
    folder = Path(results_dir) if results_dir is not None else settings.cache_dir / "results"
    return folder / f"{stem}-{settings.profile.name}.json"


def save_results(payload: dict, settings, *, provenance: Sequence = (),
                 results_dir: Path | None = None, stem: str = "showdown") -> Path:
    """Write ``payload`` (JSON-ready: tables as lists of records) with the settings, profile,
    model provenance and package versions, so a figure can be redrawn without re-running."""
    path = results_path(settings, results_dir, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "settings": {"profile": settings.profile.name, "seed": settings.seed,
                     "model": settings.model, "cache_dir": str(settings.cache_dir)},
        "profile": asdict(settings.profile),
        "provenance": [asdict(p) if is_dataclass(p) else p for p in provenance],
        "versions": package_versions(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, default=_jsonable), encoding="utf-8")
    return path


def _jsonable(value):
    if value is _missing():
        return None
    if hasattr(value, "to_dict"):
        return value.to_dict(orient="records")
    if hasattr(value, "item"):
        return value.item()
    if is_dataclass(value):
        return asdict(value)
    return str(value)


def _missing():
    import pandas as pd

    return pd.NA


def load_results(settings, results_dir: Path | None = None, stem: str = "showdown") -> dict:
    """The document written by :func:`save_results` for this profile."""
    path = results_path(settings, results_dir, stem)
    if not path.is_file():
        raise FileNotFoundError(f"No results at {path}: run notebook 06 first (same "
                                "RAGFT_CACHE_DIR and RAGFT_PROFILE).")
    return json.loads(path.read_text(encoding="utf-8"))


# ---- side-by-side view ---------------------------------------------------------------------------

def side_by_side(question_text: str, systems: Sequence[System], settings, *,
                 questions: Sequence[Question] = ()) -> list[dict]:
    """Ask every system ``question_text``; one row each with the answer, the retrieved sources
    and their scores, the latency, and ``right`` (``None`` unless the text is one of
    ``questions``). An unusable question gives rows carrying the error instead."""
    from ragft_helpers.rag import answer

    known = {normalise(q.question): q for q in questions}
    question = known.get(normalise(question_text))
    rows = []
    for system in systems:
        try:
            reply = answer(question_text, model=system.model, tokenizer=system.tokenizer,
                           collection=system.collection, k=system.k, use_retrieval=system.retrieval,
                           settings=settings)
        except ValueError as err:
            rows.append({"system": system.name, "answer": "", "sources": [], "ms": 0.0,
                         "right": None, "error": str(err)})
            continue
        abstained = reply.abstained or is_abstention(reply.text)
        right = None if question is None else (
            contains_answer(reply.text, question) if question.answerable else abstained)
        rows.append({"system": system.name, "answer": reply.text,
                     "sources": [(c.label, round(c.score, 3)) for c in reply.sources],
                     "ms": round(reply.retrieval_ms + reply.generation_ms), "right": right,
                     "error": ""})
    return rows


def side_by_side_html(rows: Sequence[dict]) -> str:
    import html

    mark = {True: "✅", False: "❌", None: "–"}
    cells = "".join(
        f"<tr><td><b>{html.escape(r['system'])}</b></td>"
        f"<td>{html.escape(r['error'] or r['answer'])}</td>"
        f"<td>{'<br>'.join(f'{html.escape(label)} ({score})' for label, score in r['sources'])}</td>"
        f"<td>{r['ms']}</td><td>{mark[r['right']]}</td></tr>" for r in rows)
    return ("<table><tr><th>system</th><th>answer</th><th>sources (score)</th><th>ms</th>"
            f"<th>right</th></tr>{cells}</table>")


def side_by_side_widget(systems: Sequence[System], questions: Sequence[Question], settings):
    """Pick or type a question, choose systems, compare their answers (:func:`side_by_side`)."""
    import ipywidgets as widgets

    by_name = {s.name: s for s in systems}
    question = widgets.Combobox(options=[q.question for q in questions],
                                description="Question", layout=widgets.Layout(width="80%"))
    chosen = widgets.SelectMultiple(options=list(by_name), value=tuple(by_name), description="Systems")
    ask = widgets.Button(description="Ask", button_style="primary")
    output = widgets.HTML()

    def on_ask(_):
        output.value = "…"
        rows = side_by_side(question.value, [by_name[n] for n in chosen.value], settings,
                            questions=questions)
        output.value = side_by_side_html(rows)

    ask.on_click(on_ask)
    return widgets.VBox([question, chosen, ask, output])


# ---- costs ---------------------------------------------------------------------------------------

def estimate_index_seconds(chunk_texts: Sequence[str], sample: int = 16) -> float:
    """Seconds to embed all ``chunk_texts`` from scratch, measured on an evenly spread sample of
    ``sample`` of them and scaled (an already-built index re-embeds nothing, so it cannot be
    timed directly)."""
    from ragft_helpers.store import MiniLMEmbeddingFunction

    embed = MiniLMEmbeddingFunction()
    embed(["warm-up"])
    step = max(1, len(chunk_texts) // sample)
    chosen = list(chunk_texts)[::step][:sample]
    start = time.perf_counter()
    embed(chosen)
    return (time.perf_counter() - start) * len(chunk_texts) / len(chosen)


def plot_accuracy(table, systems: Sequence[str], ax=None):
    """Grouped bars from :func:`accuracy_table` (one group per metric, one bar per system) with
    the bootstrap intervals as whiskers; returns the matplotlib Axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4))
    metrics = list(dict.fromkeys(table["metric"]))
    width = 0.8 / len(systems)
    for n, system in enumerate(systems):
        rows = table[table["system"] == system].set_index("metric").reindex(metrics)
        x = np.arange(len(metrics)) + (n - (len(systems) - 1) / 2) * width
        errors = np.vstack([rows["value"] - rows["low"], rows["high"] - rows["value"]])
        ax.bar(x, rows["value"], width, yerr=np.nan_to_num(errors), capsize=2, label=system)
    ax.set_xticks(np.arange(len(metrics)), [m.removeprefix("mc_") for m in metrics])
    ax.set_ylabel("multiple-choice accuracy")
    ax.set_ylim(0, 1)
    ax.axhline(0.25, color="grey", linestyle=":", linewidth=1, label="chance (4 options)")
    ax.legend(fontsize=8, ncol=4)
    ax.grid(axis="y", alpha=0.3)
    return ax
