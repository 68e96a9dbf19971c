"""Notebook 06's memory, step by step: its calls in order with shorter budgets, peak RSS after each.

    RAGFT_PROFILE=laptop python benchmarks/bench_raft_memory.py --loading one-at-a-time
    RAGFT_PROFILE=laptop python benchmarks/bench_raft_memory.py --loading all-at-once
    ... --trained-elsewhere      # the readers train in a child process: scoring measured alone

The profile's settings with ``raft_max_steps``, ``raft_eval_questions`` and ``train_max_steps``
set by the options (the memory of a step hardly depends on how many steps run). Scoring either
keeps the base model loaded and scores each fine-tuned model one at a time
(``harness.evaluate_phrasings_loaded``, as the notebook does: the full reader, the LoRA reader
with and without retrieval, the knowledge fine-tune), or loads all of them at once. Everything
goes to a temporary cache (the converted model included), so nothing is reloaded from an
earlier run.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import psutil

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import assets, harness, injection, qa, raft, store
from ragft_helpers.config import KNOWLEDGE_DIR, get_settings


def report(step: str) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{step:<40} peak {peak:5.2f} GB, resident now {psutil.Process().memory_info().rss / 2**30:5.2f} GB",
          flush=True)


def run(args) -> None:
    settings = get_settings().with_budgets(raft_max_steps=args.steps, raft_full_max_steps=args.steps,
                                           raft_eval_questions=args.questions,
                                           train_max_steps=args.kb_steps)
    base = assets.load_causal_lm(settings, verbose=False)
    questions = qa.load_questions()
    collection = store.open_collection(settings)
    store.index_folder(KNOWLEDGE_DIR, collection, progress=False)
    if not args.score_only:
        examples = raft.training_examples(settings, base.tokenizer, questions)
        report("setup: model, index, RAFT examples")
        for name in raft.READERS:
            raft.ensure_reader(settings, name, questions, examples=examples)
            report(f"trained {name}")
        injection.ensure_variants(settings, ["kb-full"])
        report("trained kb-full")
    if args.train_only:
        return
    _, test_questions = raft.split_questions(questions)
    sample = qa.sample(test_questions, settings.profile.raft_eval_questions, seed=settings.seed)
    with_rag = {"retrieval": True, "collection": collection}
    systems = [harness.System("base", base.model, base.tokenizer),
               harness.System("base + RAG", base.model, base.tokenizer, **with_rag)]
    loaders = [("RAFT full + RAG", lambda: raft.load_reader("raft-full", settings), with_rag),
               ("RAFT LoRA + RAG", lambda: raft.load_reader(raft.CHAT_READER, settings), with_rag),
               ("KB fine-tune + RAG", lambda: injection.load_variant("kb-full", settings), with_rag),
               ("RAFT LoRA alone", lambda: raft.load_reader(raft.CHAT_READER, settings), {})]
    start = time.perf_counter()
    if args.loading == "all-at-once":
        lora = raft.load_reader(raft.CHAT_READER, settings)
        full, kb = raft.load_reader("raft-full", settings), injection.load_variant("kb-full", settings)
        systems += [harness.System("RAFT full + RAG", full.model, full.tokenizer, **with_rag),
                    harness.System("RAFT LoRA + RAG", lora.model, lora.tokenizer, **with_rag),
                    harness.System("KB fine-tune + RAG", kb.model, kb.tokenizer, **with_rag),
                    harness.System("RAFT LoRA alone", lora.model, lora.tokenizer)]
        harness.evaluate_phrasings(systems, sample, settings)
    else:
        harness.evaluate_phrasings(systems, sample, settings)
        for name, load, options in loaders:
            harness.evaluate_phrasings_loaded(name, load, sample, settings, **options)
    report(f"scored six systems ({args.loading})")
    print(f"scoring took {time.perf_counter() - start:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loading", choices=("one-at-a-time", "all-at-once"), default="one-at-a-time")
    parser.add_argument("--steps", type=int, default=12, help="RAFT optimiser steps per reader")
    parser.add_argument("--questions", type=int, default=8, help="test questions per phrasing")
    parser.add_argument("--kb-steps", type=int, default=4, help="knowledge fine-tune steps")
    parser.add_argument("--trained-elsewhere", action="store_true",
                        help="train in a child process first, so this process only scores")
    parser.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--score-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.environ.get("RAGFT_BENCH_CACHE"):
        os.environ["RAGFT_CACHE_DIR"] = os.environ["RAGFT_BENCH_CACHE"]
        run(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="ragft-raft-memory-") as cache:
        env = {**os.environ, "RAGFT_BENCH_CACHE": cache}
        print(f"profile {get_settings().profile.name}, loading {args.loading}, {args.steps} RAFT steps, "
              f"{args.questions} questions per phrasing", flush=True)
        options = sys.argv[1:]
        if args.trained_elsewhere:
            subprocess.run([sys.executable, __file__, *options, "--train-only"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            options.append("--score-only")
        return subprocess.run([sys.executable, __file__, *options], env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
