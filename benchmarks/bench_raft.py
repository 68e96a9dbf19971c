"""Retrieval-augmented fine-tuning over several seeds: do notebook 06's asserted directions hold?

For each seed (``RAGFT_SEED``) at one profile: train the RAFT reader the chatbot uses
(``raft.CHAT_READER``, LoRA; ``--reader raft-full`` for the other) or reload it, then score
base + RAG, RAFT + RAG, the base model alone and RAFT alone on the test-article questions of
the profile's sample, as written and as people type them. Reports free-form accuracy with 95%
intervals, abstention and false abstention, training time and peak memory, and whether each asserted direction held:

- "RAFT + RAG beats base + RAG on free-form accuracy" (both phrasings pooled, as notebook 06 asserts);
- "RAFT alone is not above the base model alone" (intervals overlap or lie below).

    python benchmarks/bench_raft.py --profile smoke --seeds 42 1 2

Writes benchmarks/results/raft-<profile>-<reader>.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import assets, claims, harness, qa, raft, rag, retrieval, store
from ragft_helpers.config import KNOWLEDGE_DIR, get_settings, set_seed

RESULTS = Path(__file__).resolve().parent / "results"


def one_seed(profile: str, seed: int, reader_name: str) -> dict:
    env = {**os.environ, "RAGFT_PROFILE": profile, "RAGFT_SEED": str(seed)}
    settings = get_settings(env)
    set_seed(settings.seed)
    questions = qa.load_questions()
    run = raft.ensure_reader(settings, reader_name, questions)
    base = assets.load_causal_lm(settings, verbose=False)
    reader = raft.load_reader(reader_name, settings)
    collection = store.open_collection(settings)
    store.index_folder(KNOWLEDGE_DIR, collection, progress=False, settings=settings)
    _, test = raft.split_questions(questions)
    sample = qa.sample(test, settings.profile.raft_eval_questions, seed=settings.seed)
    systems = [harness.System("base + RAG", base.model, base.tokenizer, retrieval=True, collection=collection),
               harness.System("RAFT + RAG", reader.model, reader.tokenizer, retrieval=True, collection=collection),
               harness.System("base", base.model, base.tokenizer),
               harness.System("RAFT alone", reader.model, reader.tokenizer)]
    start = time.perf_counter()
    results = harness.evaluate_phrasings(systems, sample, settings)
    eval_seconds = time.perf_counter() - start
    judged = judgement(reader, sample, collection, settings)
    summaries = {key: result.summary() for key, result in results.items()}
    free = {key: value["free"] for key, value in summaries.items()}
    pooled = {s.name: harness.pooled_summary(results, s.name)["free"] for s in systems}
    return {
        "seed": seed, "run": run, "questions": len(sample), "eval_seconds": eval_seconds, "judged": judged,
        "free": free, "abstention": {key: value["abstention"] for key, value in summaries.items()},
        "false_abstention": {key: value["false_abstention"] for key, value in summaries.items()},
        "pooled": pooled,
        "reads_better": pooled["RAFT + RAG"]["value"] > pooled["base + RAG"]["value"],
        "no_memory": claims.compare_intervals(pooled["RAFT alone"], pooled["base"]) <= 0,
    }


def judgement(reader, sample, collection, settings) -> dict[tuple[str, bool], float]:
    """(phrasing, answerable) -> the mean probability that the reader's answer opens with the
    abstention, each question asked as :func:`harness.evaluate_phrasings` asks it, with the
    profile's ``rag_k`` retrieved chunks."""
    phrasings = {"canonical": sample, "variant": [harness.as_phrasing(q, n) for n, q in enumerate(sample)]}
    judged = {}
    for phrasing, asked in phrasings.items():
        for answerable in (True, False):
            chances = [raft.abstention_probability(reader.model, reader.tokenizer, rag.build_prompt(
                q.question, retrieval.retrieve(q.question, settings.profile.rag_k, collection,
                                               settings=settings), reader.tokenizer))
                       for q in asked if q.answerable == answerable]
            judged[(phrasing, answerable)] = sum(chances) / len(chances) if chances else float("nan")
    return judged


def fmt(interval: dict) -> str:
    return f"{interval['value']:.2f} [{interval['low']:.2f}, {interval['high']:.2f}]"


def report(profile: str, rows: list[dict], command: str) -> str:
    lines = [f"# Retrieval-augmented fine-tuning at the `{profile}` profile, {len(rows)} seeds, "
             f"reader `{rows[0]['run'].name}`", "",
             f"`{command}`", "",
             f"{os.cpu_count()} CPU cores, Python {platform.python_version()}; reader trained for "
             f"{rows[0]['run'].steps} steps on {rows[0]['run'].examples} examples; "
             f"{rows[0]['questions']} test-article questions per phrasing.", "",
             "| seed | phrasing | base + RAG | RAFT + RAG | base alone | RAFT alone | RAFT abstention (unanswerable) | RAFT false abstention (answerable) | P(opens with the abstention): answerable / unanswerable |",
             "| ---: | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        for phrasing in ("canonical", "variant"):
            free = {name: row["free"][(name, phrasing)] for name in
                    ("base + RAG", "RAFT + RAG", "base", "RAFT alone")}
            lines.append(f"| {row['seed']} | {phrasing} | {fmt(free['base + RAG'])} | "
                         f"{fmt(free['RAFT + RAG'])} | {fmt(free['base'])} | {fmt(free['RAFT alone'])} | "
                         f"{fmt(row['abstention'][('RAFT + RAG', phrasing)])} | "
                         f"{fmt(row['false_abstention'][('RAFT + RAG', phrasing)])} | "
                         f"{row['judged'][(phrasing, True)]:.2f} / {row['judged'][(phrasing, False)]:.2f} |")
    lines += ["", "| seed | base + RAG, both phrasings | RAFT + RAG, both phrasings | training s | "
              "peak RSS GB | scoring s | RAFT + RAG > base + RAG | RAFT alone not above base |",
              "| ---: | --- | --- | ---: | ---: | ---: | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['seed']} | {fmt(row['pooled']['base + RAG'])} | "
                     f"{fmt(row['pooled']['RAFT + RAG'])} | {row['run'].train_seconds:.0f} | "
                     f"{row['run'].peak_memory_mb / 1024:.2f} | {row['eval_seconds']:.0f} | "
                     f"{'held' if row['reads_better'] else 'FAILED'} | "
                     f"{'held' if row['no_memory'] else 'FAILED'} |")
    held = all(r["reads_better"] and r["no_memory"] for r in rows)
    lines += ["", f"Both asserted directions held on every seed: {'yes' if held else 'NO'}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--reader", choices=raft.READERS, default=raft.CHAT_READER)
    args = parser.parse_args(argv)
    rows = [one_seed(args.profile, seed, args.reader) for seed in args.seeds]
    command = (f"python benchmarks/bench_raft.py --profile {args.profile} --reader {args.reader} "
               f"--seeds {' '.join(map(str, args.seeds))}")
    text = report(args.profile, rows, command)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"raft-{args.profile}-{args.reader}.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
