"""Retrieval and RAG: indexing vs raw embedding throughput, re-indexing, query and answer latency.

Measured in one run on the knowledge base in ``data/knowledge`` (default chunking):

- indexing throughput (``index_folder`` into a new persistent index: loading, chunking, embedding,
  writing) against ``SentenceTransformer.encode`` of the same chunk texts; best of ``--repeats``
  runs of each, alternated;
- re-indexing the unchanged knowledge base, as a share of the cold build;
- query latency of ``retrieval.retrieve`` (k = the profile's ``rag_k``, query embedding included) over the QA questions,
  with the default (hybrid) method and with dense retrieval alone;
- retrieval quality of dense, BM25 and hybrid retrieval (section-level hit@1/hit@5, MRR) on the
  answerable questions as written and on their realistic variants;
- end-to-end ``rag.answer`` latency (k = the profile's ``rag_k``, the profile's ``max_new_tokens`` capped at 48,
  greedy) with the resolved language model, split into retrieval, prefill (time to the first new
  token) and decode, on ``--answers`` answerable questions spread over the question set; the same
  questions token by token (no prompt lookup) as the reference the other answers are compared to;
- batched free-form answers (``rag.answer_many``, the profile's ``answer_batch_size`` and
  ``answer_batch_tokens``) against the same questions answered one by one: agreement of the
  answers and the speed ratio;
- batched multiple choice (``scoring.choose_options``, the profile's ``choice_batch_size``)
  against ``scoring.choose_option`` per question, with and without the retrieved chunks in the
  prompt: agreement of the choices, largest score difference, speed ratio;
- scoring a system with the harness (``harness.evaluate_system``: multiple choice and a free-form
  answer per question, each prompt read once), without and with retrieval, against the way it
  scored before (a multiple-choice pass of its own, answers in batches of 8): agreement, speed;
- with ``--bf16``, the one-by-one answers of a bf16 copy of the model: agreement and speed;
- with ``--lookup N ...``, the one-by-one answers with prompt lookup proposing N tokens instead of
  ``rag.PROMPT_LOOKUP``: agreement with token by token, and speed.

Speed ratios are given by wall time and by the CPU time of this process (with one torch thread,
the CPU time is the work done, which other jobs on the cores inflate far less than wall time).

    python benchmarks/bench_rag.py [--repeats 2] [--queries 263] [--answers 24] [--threads N] [--bf16]
                                   [--lookup N ...] [--output FILE]

Prints a Markdown table, writes it to benchmarks/results/rag.md and puts it, with the command,
in the "## Retrieval and RAG" section of benchmarks/README.md (the other sections are left as
they are); with ``--output``, writes the table there only (a measurement of another machine).
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import ragft_helpers  # before transformers: sets offline mode when the hub is unreachable
from ragft_helpers import harness, raft, rag, retrieval, retrieval_metrics, scoring, store
from ragft_helpers.assets import load_causal_lm
from ragft_helpers.config import get_settings
from ragft_helpers.corpus import chunk_documents, load_documents
from ragft_helpers.machine import percentiles
from ragft_helpers.qa import load_questions

import chromadb
import torch

ROOT = Path(__file__).resolve().parents[1]
KNOWLEDGE = ROOT / "data" / "knowledge"
WORK = Path(__file__).resolve().parent / "_work" / "rag"
RESULTS = Path(__file__).resolve().parent / "results" / "rag.md"
README = Path(__file__).resolve().parent / "README.md"
SECTION = "## Retrieval and RAG"
COMMAND = "python benchmarks/bench_rag.py"
TARGETS = {"indexing": 0.85, "reindex": 0.05, "query_p50_ms": 30.0, "answer_p50_s": 1.5,
           "batched_speedup": 2.0}
# Retrieval quality targets (section level): (hit@1, hit@5) on each phrasing.
QUALITY_TARGETS = {"canonical": (0.70, 0.94), "variant": (0.75, 0.95)}
MAX_NEW_TOKENS = 48


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux), else ``None``."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def new_collection(settings, folder: Path):
    """A new, empty persistent index in ``folder``, and the settings that point there."""
    shutil.rmtree(folder, ignore_errors=True)
    local = replace(settings, cache_dir=folder, chroma_url=None)
    return store.open_collection(local), local


def measure_indexing(settings, texts: list[str], repeats: int) -> tuple[float, float, float, object]:
    """Best raw-encode and best cold-build seconds, median re-index seconds, last collection."""
    model = store.shared_embedding_model()
    model.encode(texts[:64], batch_size=32, normalize_embeddings=True)  # warm-up
    encode, build = [], []
    for run in range(repeats):
        start = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        encode.append(time.perf_counter() - start)
        collection, local = new_collection(settings, WORK / f"cold-{run}")
        start = time.perf_counter()
        report = store.index_folder(KNOWLEDGE, collection, progress=False, settings=local)
        build.append(time.perf_counter() - start)
        assert report.added == len(texts), report
    reindex = []
    for _ in range(max(3, repeats)):
        start = time.perf_counter()
        report = store.index_folder(KNOWLEDGE, collection, progress=False, settings=local)
        reindex.append(time.perf_counter() - start)
        assert report.embedded == 0 and report.removed == 0 and not report.lexical_rebuilt, report
    return min(encode), min(build), statistics.median(reindex), collection, local


def measure_queries(collection, questions: list[str], settings,
                    method: str) -> tuple[list[float], list[float]]:
    """Milliseconds per ``retrieval.retrieve`` (k = ``rag_k``, ``method``) and, as its baseline,
    per raw embedding of the question alone."""
    model = store.shared_embedding_model()
    k = settings.profile.rag_k
    for question in questions[:5]:  # warm-up
        retrieval.retrieve(question, k=k, collection=collection, settings=settings, method=method)
    times, encode = [], []
    for question in questions:
        start = time.perf_counter()
        model.encode([question], normalize_embeddings=True, show_progress_bar=False)
        encode.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        retrieval.retrieve(question, k=k, collection=collection, settings=settings, method=method)
        times.append((time.perf_counter() - start) * 1000)
    return times, encode


def embedding_tokens(texts: list[str]) -> int:
    """Tokens the embedding model reads for ``texts`` (each cut at its maximum sequence length)."""
    model = store.shared_embedding_model()
    lengths = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    return sum(len(ids) for ids in lengths)


def timed(work):
    """``work()``, its wall seconds and the CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def one_by_one(questions: list[str], options: dict) -> tuple[list, list[float], list[float]]:
    """``rag.answer`` per question: the replies, wall and CPU seconds of each."""
    replies, walls, cpus = [], [], []
    for question in questions:
        reply, wall, cpu = timed(lambda: rag.answer(question, **options))
        replies.append(reply)
        walls.append(wall)
        cpus.append(cpu)
    return replies, walls, cpus


def agreement(first: list[str], second: list[str]) -> float:
    return sum(a == b for a, b in zip(first, second)) / len(first)


def p50(values) -> float:
    return percentiles(list(values), (50,))["p50"]


def measure_answers(resolved, collection, questions: list[str], settings, index_settings,
                    bf16: bool, lookups: Sequence[int] = ()) -> dict:
    """Free-form answers with the model of ``resolved`` on the index of ``index_settings``: one by
    one (as the chat and ``ragft ask`` answer), token by token, in batches, optionally in bf16,
    and with prompt lookup proposing each of ``lookups`` tokens instead of the default."""
    options = dict(model=resolved.model, tokenizer=resolved.tokenizer, collection=collection,
                   max_new_tokens=min(settings.profile.max_new_tokens, MAX_NEW_TOKENS),
                   settings=index_settings, threshold=0.0)
    rag.answer(questions[0], **options)  # warm-up
    reference, reference_walls, reference_cpus = one_by_one(questions, {**options, "prompt_lookup": 0})
    replies, walls, cpus = one_by_one(questions, options)
    batch_size = settings.profile.answer_batch_size
    batched, batched_wall, batched_cpu = timed(
        lambda: rag.answer_many(questions, batch_size=batch_size, **options))
    texts, reference_texts = [r.text for r in replies], [r.text for r in reference]
    result = {
        "answers": len(questions), "answer_batch_size": batch_size,
        "answer_batch_tokens": settings.profile.answer_batch_tokens,
        "answer_p50": p50(walls), "answer_cpu_p50": p50(cpus),
        "generation_p50": p50(r.generation_ms / 1000 for r in replies),
        "retrieval_p50_ms": p50(r.retrieval_ms for r in replies),
        "prefill_p50": p50(r.prefill_ms / 1000 for r in replies),
        "decode_p50": p50(r.decode_ms / 1000 for r in replies),
        "reference_p50": p50(reference_walls), "reference_cpu_p50": p50(reference_cpus),
        "lookup_agreement": agreement(texts, reference_texts),
        "lookup_ratio": sum(reference_walls) / sum(walls),
        "lookup_cpu_ratio": sum(reference_cpus) / sum(cpus),
        "batched_agreement": agreement([r.text for r in batched], texts),
        "batched_reference_agreement": agreement([r.text for r in batched], reference_texts),
        "one_by_one_s": sum(walls), "one_by_one_cpu_s": sum(cpus),
        "reference_s": sum(reference_walls), "reference_cpu_s": sum(reference_cpus),
        "batched_s": batched_wall, "batched_cpu_s": batched_cpu,
        "batched_ratio": sum(reference_walls) / batched_wall,
        "batched_cpu_ratio": sum(reference_cpus) / batched_cpu,
    }
    result["lookups"] = []
    for proposed in lookups:
        others, other_walls, other_cpus = one_by_one(questions, {**options, "prompt_lookup": proposed})
        result["lookups"].append({
            "tokens": proposed, "agreement": agreement([r.text for r in others], reference_texts),
            "p50": p50(other_walls), "ratio": sum(reference_walls) / sum(other_walls),
            "cpu_ratio": sum(reference_cpus) / sum(other_cpus)})
    if bf16:
        low = copy.deepcopy(resolved.model).to(torch.bfloat16)
        rag.answer(questions[0], **{**options, "model": low})  # warm-up
        halves, half_walls, half_cpus = one_by_one(questions, {**options, "model": low})
        result.update({"bf16_agreement": agreement([r.text for r in halves], texts),
                       "bf16_p50": p50(half_walls), "bf16_cpu_p50": p50(half_cpus),
                       "bf16_ratio": sum(walls) / sum(half_walls),
                       "bf16_cpu_ratio": sum(cpus) / sum(half_cpus)})
        del low
    return result


def measure_choices(resolved, collection, questions, settings, index_settings) -> list[dict]:
    """Multiple choice per question (``choose_option``) and in batches (``choose_options``),
    without and with the retrieved chunks in the prompt."""
    model, tokenizer = resolved.model, resolved.tokenizer
    rows = []
    for with_retrieval in (False, True):
        items = []
        for q in questions:
            chunks = (retrieval.retrieve(q.question, settings.profile.rag_k, collection,
                                         settings=index_settings) if with_retrieval else [])
            options = [q.answer, *q.distractors]
            order = scoring.option_order(len(options), settings.seed, q.id)
            items.append((rag.build_prompt(q.question, chunks, tokenizer), [options[i] for i in order]))
        scoring.choose_option(model, tokenizer, *items[0])  # warm-up
        alone, alone_wall, alone_cpu = timed(
            lambda: [scoring.choose_option(model, tokenizer, prompt, options) for prompt, options in items])
        batch_size = settings.profile.choice_batch_size
        batched, batched_wall, batched_cpu = timed(
            lambda: scoring.choose_options(model, tokenizer, items, batch_size=batch_size))
        rows.append({
            "retrieval": with_retrieval, "questions": len(items), "batch_size": batch_size,
            "prompt_tokens_p50": p50(len(tokenizer(p, add_special_tokens=False)["input_ids"])
                                     for p, _ in items),
            # every prompt once, then each of its options after it
            "tokens": sum(len(tokenizer(p + " " + " ".join(o), add_special_tokens=False)["input_ids"])
                          for p, o in items),
            "agreement": sum(a[0] == b[0] for a, b in zip(alone, batched)) / len(items),
            "max_score_difference": max(abs(x - y) for a, b in zip(alone, batched)
                                        for x, y in zip(a[1], b[1])),
            "alone_s": alone_wall, "alone_cpu_s": alone_cpu,
            "batched_s": batched_wall, "batched_cpu_s": batched_cpu,
            "ratio": alone_wall / batched_wall, "cpu_ratio": alone_cpu / batched_cpu})
    return rows


def measure_scoring(resolved, collection, questions, settings) -> list[dict]:
    """What ``harness.evaluate_system`` costs per system, without and with retrieval: multiple
    choice and a free-form answer for every question, each prompt read once and the answers in
    batches of ≤ ``answer_batch_size`` prompts and ≤ ``answer_batch_tokens`` padded tokens,
    against the way it scored before in the same run (a multiple-choice pass of its own, then
    the answers in batches of 8)."""
    rows = []
    for with_retrieval in (False, True):
        system = harness.System("bench", resolved.model, resolved.tokenizer,
                                retrieval=with_retrieval, collection=collection)

        def before():
            choices = harness.multiple_choice_many(system, questions, settings)
            replies = rag.answer_many([q.question for q in questions], model=system.model,
                                      tokenizer=system.tokenizer, collection=collection,
                                      use_retrieval=with_retrieval, settings=settings,
                                      batch_size=8, batch_tokens=10 ** 9)  # no token cap
            return [c["mc_choice"] for c in choices], [r.text for r in replies]

        (old_choices, old_answers), before_wall, before_cpu = timed(before)
        result, wall, cpu = timed(lambda: harness.evaluate_system(system, questions, settings,
                                                                  reuse=False))
        rows.append({
            "retrieval": with_retrieval, "questions": len(questions),
            "choice_agreement": agreement(result.rows["mc_choice"].tolist(), old_choices),
            "answer_agreement": agreement(result.rows["answer"].tolist(), old_answers),
            "before_s": before_wall, "before_cpu_s": before_cpu, "after_s": wall, "after_cpu_s": cpu,
            "ratio": before_wall / wall, "cpu_ratio": before_cpu / cpu})
    return rows


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def others_note(r: dict) -> str:
    if "others_share" not in r:
        return "load from other processes not measured"
    return f"other processes used {r['others_share']:.0%} of the cores during the run"


def results_table(r: dict) -> str:
    rows = [
        "| measure | result | target | |",
        "| --- | --- | --- | --- |",
        f"| indexing throughput (`index_folder`) | {r['index_rate']:.0f} chunks/s = "
        f"{r['index_ratio']:.0%} of raw `encode` ({r['encode_rate']:.0f} chunks/s) | "
        f"≥ {TARGETS['indexing']:.0%} | {verdict(r['index_ratio'] >= TARGETS['indexing'])} |",
        f"| re-index, unchanged knowledge base | {r['reindex_s'] * 1000:.0f} ms = "
        f"{r['reindex_share']:.1%} of the cold build ({r['build_s']:.1f} s) | "
        f"≤ {TARGETS['reindex']:.0%} | {verdict(r['reindex_share'] <= TARGETS['reindex'])} |",
        f"| query latency, hybrid, k = {r['k']}, {r['chunks']} chunks ({r['queries']} questions) | "
        f"p50 {r['query_p50']:.1f} ms, p95 {r['query_p95']:.1f} ms (dense alone: p50 "
        f"{r['dense_query_p50']:.1f} ms) | "
        f"p50 ≤ {TARGETS['query_p50_ms']:.0f} ms | {verdict(r['query_p50'] <= TARGETS['query_p50_ms'])} |",
        f"| RAG answer latency (`rag.answer`), k = {r['k']}, ≤ {r['max_new_tokens']} new tokens "
        f"({r['answers']} questions, one by one) | p50 {r['answer_p50']:.2f} s: retrieval "
        f"{r['retrieval_p50_ms']:.0f} ms, prefill {r['prefill_p50']:.2f} s, decode "
        f"{r['decode_p50']:.2f} s (p50 of each); CPU time p50 {r['answer_cpu_p50']:.2f} s | "
        f"p50 ≤ {TARGETS['answer_p50_s']:g} s | {verdict(r['answer_p50'] <= TARGETS['answer_p50_s'])} |",
        f"| prompt lookup decoding (`rag.answer`) vs token by token | answers agree on "
        f"{r['lookup_agreement']:.0%}; {r['lookup_ratio']:.2f}× by wall time "
        f"({r['lookup_cpu_ratio']:.2f}× by CPU time); token by token p50 {r['reference_p50']:.2f} s "
        f"(CPU {r['reference_cpu_p50']:.2f} s) | all agree | "
        f"{verdict(r['lookup_agreement'] == 1.0)} |",
        f"| batched free-form (`rag.answer_many`, batches of ≤ {r['answer_batch_size']} prompts and "
        f"≤ {r['answer_batch_tokens']} padded tokens), k = {r['k']} vs one by one "
        f"token by token | answers agree on {r['batched_reference_agreement']:.0%} "
        f"({r['batched_agreement']:.0%} with prompt lookup's); {r['batched_ratio']:.2f}× by wall "
        f"time ({r['reference_s']:.0f} s → {r['batched_s']:.0f} s), {r['batched_cpu_ratio']:.2f}× "
        f"by CPU time ({r['reference_cpu_s']:.0f} s → {r['batched_cpu_s']:.0f} s) | "
        f"≥ {TARGETS['batched_speedup']:g}× | "
        f"{verdict(min(r['batched_ratio'], r['batched_cpu_ratio']) >= TARGETS['batched_speedup'])} |",
    ]
    for other in r.get("lookups", []):
        rows.append(
            f"| prompt lookup of {other['tokens']} tokens instead of {rag.PROMPT_LOOKUP} vs token by "
            f"token | answers agree on {other['agreement']:.0%}; p50 {other['p50']:.2f} s, "
            f"{other['ratio']:.2f}× by wall time ({other['cpu_ratio']:.2f}× by CPU time) | | |")
    for c in r["choices"]:
        prompt = f"k = {r['k']} chunks" if c["retrieval"] else "no retrieval"
        rows.append(
            f"| batched multiple choice (`choose_options`, batches of ≤ {c['batch_size']} prompts "
            f"and ≤ {scoring.CHOICE_BATCH_TOKENS} padded tokens) vs per "
            f"question, {prompt} (prompt p50 {c['prompt_tokens_p50']:.0f} tokens, "
            f"{c['questions']} questions) | choices agree on {c['agreement']:.0%}, scores within "
            f"{c['max_score_difference']:.1e}; {c['ratio']:.2f}× by wall time "
            f"({c['alone_s']:.1f} s → {c['batched_s']:.1f} s), {c['cpu_ratio']:.2f}× by CPU time | | |")
    for c in r.get("scoring", []):
        prompt = f"k = {r['k']} chunks" if c["retrieval"] else "no retrieval"
        rows.append(
            f"| scoring a system (`harness.evaluate_system`: multiple choice and a free-form answer "
            f"per question, each prompt read once, budgeted batches) vs a multiple-choice pass of "
            f"its own and answers in batches of 8, {prompt} ({c['questions']} questions) | choices "
            f"agree on {c['choice_agreement']:.0%}, answers on {c['answer_agreement']:.0%}; "
            f"{c['ratio']:.2f}× by wall time ({c['before_s']:.1f} s → {c['after_s']:.1f} s), "
            f"{c['cpu_ratio']:.2f}× by CPU time | | |")
    if "bf16_agreement" in r:
        rows.append(
            f"| bf16 copy of the model (`rag.answer`), kept only if every answer agrees | answers "
            f"agree with fp32 on "
            f"{r['bf16_agreement']:.0%}; p50 {r['bf16_p50']:.2f} s (CPU {r['bf16_cpu_p50']:.2f} s), "
            f"{r['bf16_ratio']:.2f}× by wall time, {r['bf16_cpu_ratio']:.2f}× by CPU time | "
            f"all agree | {verdict(r['bf16_agreement'] == 1.0)} |")
    return "\n".join(rows) + "\n"


def quality_table(r: dict) -> str:
    """Section-level retrieval quality per method and phrasing, with the targets of the default."""
    rows = ["| method | phrasing | questions | hit@1 | hit@5 | MRR | target (hit@1, hit@5) | |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for q in r["quality"]:
        target = QUALITY_TARGETS[q["phrasing"]]
        judged = q["method"] == r["default_method"]
        met = q["hit@1"] >= target[0] and q["hit@5"] >= target[1]
        rows.append(f"| {q['method']} | {q['phrasing']} | {q['questions']:.0f} | {q['hit@1']:.2f} | "
                    f"{q['hit@5']:.2f} | {q['MRR']:.2f} | "
                    f"{'≥ %.2f, ≥ %.2f' % target if judged else ''} | {verdict(met) if judged else ''} |")
    return "\n".join(rows) + "\n"


def quality_by_split(ranks, questions) -> list[dict]:
    """The default method's quality on the variants, by side of notebook 06's article split: the
    fusion weight and the BM25 parameters were chosen on the train articles' variants, so the test
    articles' are held out from that choice."""
    train, test = raft.split_questions([q for q in questions if q.answerable])
    side = {q.id: "train articles" for q in train} | {q.id: "test articles (held out)" for q in test}
    variants = ranks[(ranks["method"] == retrieval.DEFAULT_METHOD) & (ranks["phrasing"] == "variant")]
    variants = variants.assign(side=variants["id"].map(side).fillna("questions on both sides"))
    return [{"side": name, **retrieval_metrics.retrieval_quality(rows).loc["all"].to_dict()}
            for name, rows in variants.groupby("side", sort=False)]


def split_table(r: dict) -> str:
    """The default method's variant quality by side of the article split."""
    rows = [f"{r['default_method'].capitalize()} retrieval on the variants, by article (the weights "
            "and parameters were chosen on the train articles):\n",
            "| questions about | variants | hit@1 | hit@5 | MRR |", "| --- | ---: | ---: | ---: | ---: |"]
    rows += [f"| {q['side']} | {q['questions']:.0f} | {q['hit@1']:.3f} | {q['hit@5']:.3f} | {q['MRR']:.3f} |"
             for q in r["quality_by_split"]]
    return "\n".join(rows) + "\n"


def answer_notes(r: dict) -> str:
    """How to read the answer rows."""
    return (f"The answer rows use the same {r['answers']} answerable questions, spread over the "
            "question set, with threshold 0 (every question reaches the model). Agreement is exact equality of "
            "the answer texts. One by one, an answer's prefill (reading a prompt of a few hundred "
            "tokens) is compute-bound and batching cannot shorten it; batching shares the "
            "memory-bound decode steps among the rows. Wall times grow with the load other jobs "
            "put on the cores; the CPU time of this process much less so.\n")


def results_file(r: dict, command: str) -> str:
    """benchmarks/results/rag.md: the full set-up, the table, the command."""
    setup = (f"Knowledge base: {r['documents']} documents, {r['chunks']} chunks (default "
             f"chunking); embedding model all-MiniLM-L6-v2; language model {r['model']}; "
             f"{r['cpus']} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} "
             f"threads), chromadb {chromadb.__version__}, Python {platform.python_version()}; "
             f"{others_note(r)}.")
    return (f"# Retrieval and RAG benchmark\n\n{setup}\n\n{results_table(r)}\n{answer_notes(r)}\n"
            f"Retrieval quality, section level (a variant counts as its own question):\n\n"
            f"{quality_table(r)}\n{split_table(r)}\nReproduce: `{command}`\n")


def readme_section(r: dict, command: str) -> str:
    """The body of the README's "## Retrieval and RAG" section."""
    setup = (f"{r['documents']} documents, {r['chunks']} chunks; all-MiniLM-L6-v2; {r['model']}; "
             f"{r['cpus']} CPU cores, {torch.get_num_threads()} torch thread(s); {others_note(r)}.")
    return (f"`{command}` (full table: [results/rag.md](results/rag.md))\n\n{setup}\n\n"
            f"{results_table(r)}\n{answer_notes(r)}\nRetrieval quality, section level:\n\n"
            f"{quality_table(r)}\n{split_table(r)}")


def update_readme(body: str) -> None:
    """Write ``body`` under the "## Retrieval and RAG" heading, leaving other sections alone."""
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    section = f"{SECTION}\n\n{body}"
    if SECTION not in text:
        README.write_text(text.rstrip("\n") + ("\n\n" if text.strip() else "") + section,
                          encoding="utf-8")
        return
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    rest = text[end + 1:] if end != -1 else ""
    README.write_text(text[:start] + section + ("\n" + rest if rest else ""), encoding="utf-8")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="cold builds and raw encodes")
    parser.add_argument("--queries", type=int, default=0, help="questions to time (0 = all)")
    parser.add_argument("--answers", type=int, default=24,
                        help="answerable questions for the answer and multiple-choice measures")
    parser.add_argument("--bf16", action="store_true",
                        help="also answer them with a bf16 copy of the model (agreement, speed)")
    parser.add_argument("--lookup", type=int, nargs="*", default=[],
                        help="also answer one by one with prompt lookup proposing these many tokens")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the table here and leave benchmarks/README.md as it is "
                             "(default: results/rag.md, and the README's section is updated)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0 = torch's default, one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = get_settings()
    started, busy_before, own_before = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    documents = load_documents(KNOWLEDGE)
    texts = [chunk.text for chunk in chunk_documents(documents)]
    encode_s, build_s, reindex_s, collection, local = measure_indexing(settings, texts, args.repeats)

    every = load_questions()
    questions = [q.question for q in every][:args.queries or None]
    query_ms, query_encode_ms = measure_queries(collection, questions, local, retrieval.DEFAULT_METHOD)
    dense_ms, _ = measure_queries(collection, questions, local, "dense")
    quality, ranks = retrieval_metrics.method_comparison([q for q in every if q.answerable], collection,
                                                         settings=local)
    answerable = [q for q in every if q.answerable]
    step = max(1, len(answerable) // max(1, args.answers))
    sample = answerable[::step][:args.answers]
    resolved = load_causal_lm(settings)
    answers = measure_answers(resolved, collection, [q.question for q in sample], settings, local,
                              args.bf16, args.lookup)
    choices = measure_choices(resolved, collection, sample, settings, local)
    scoring_rows = measure_scoring(resolved, collection, sample, local)

    results = {
        "documents": len(documents), "chunks": len(texts), "k": settings.profile.rag_k,
        "cpus": os.cpu_count(), "encode_rate": len(texts) / encode_s,
        "index_rate": len(texts) / build_s, "index_ratio": encode_s / build_s,
        "build_s": build_s, "reindex_s": reindex_s, "reindex_share": reindex_s / build_s,
        "queries": len(query_ms), "query_p50": percentiles(query_ms, (50,))["p50"],
        "query_p95": percentiles(query_ms, (95,))["p95"], "query_encode_p50": percentiles(query_encode_ms, (50,))["p50"],
        "dense_query_p50": percentiles(dense_ms, (50,))["p50"],
        "default_method": retrieval.DEFAULT_METHOD, "quality": quality.to_dict(orient="records"),
        "quality_by_split": quality_by_split(ranks, every),
        "encode_tokens_per_s": embedding_tokens(texts) / encode_s,
        # the embedding tables are looked up, not multiplied: they cost no FLOPs per token
        "embedding_parameters": sum(p.numel() for name, p in store.shared_embedding_model().named_parameters()
                                    if ".embeddings." not in name),
        **answers, "choices": choices, "scoring": scoring_rows, "model": resolved.provenance.name,
        "model_parameters": sum(p.numel() for p in resolved.model.parameters()),
        "max_new_tokens": min(settings.profile.max_new_tokens, MAX_NEW_TOKENS),
    }
    busy_after = busy_cpu_seconds()
    if busy_before is not None and busy_after is not None:
        others = busy_after - busy_before - (own_cpu_seconds() - own_before)
        results["others_share"] = max(0.0, others) / ((time.perf_counter() - started) * os.cpu_count())
    command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    report = results_file(results, command)
    print(report)
    output = args.output or RESULTS
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report, encoding="utf-8")
    if args.output is None:
        update_readme(readme_section(results, command))
    shutil.rmtree(WORK, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
