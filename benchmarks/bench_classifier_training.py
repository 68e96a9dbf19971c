"""Notebook 07's MiniLM classifier trained with each recipe in turn: the optimiser and the
attention implementation.

The same classifier (``tasks.train_classifier("minilm", ...)``, the profile's training messages
and budget) trained with each recipe, ``--rounds`` times, alternating, in one process: training
seconds and the first and final loss of each run. Each recipe computes the same updates (a fused
optimiser kernel, attention by plain matrix products instead of torch's fused kernel), so the
losses should agree to about 1e-3; the ratio of median times to the first recipe's is the speed-up.

    python benchmarks/bench_classifier_training.py --profile smoke --rounds 3

Writes benchmarks/results/classifier-training-<profile>.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
from pathlib import Path

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import tasks
from ragft_helpers.config import get_settings
from ragft_helpers.machine import matmul_gflops

RESULTS = Path(__file__).resolve().parent / "results"
# (name, optimiser, attention): the first is the baseline, the last what notebook 07 uses
RECIPES = (("AdamW, sdpa attention", "adamw_torch", "sdpa"),
           ("fused AdamW, sdpa attention", "adamw_torch_fused", "sdpa"),
           ("fused AdamW, eager attention", tasks.ENCODER_OPTIMIZER, tasks.ENCODER_ATTENTION))


def train_with(recipe, train, settings):
    """One MiniLM classifier trained with ``recipe``; its :class:`tasks.ClassifierRun`."""
    _, optimizer, attention = recipe
    shipped = tasks.ENCODER_OPTIMIZER, tasks.CLASSIFIERS["minilm"]
    tasks.ENCODER_OPTIMIZER = optimizer
    tasks.CLASSIFIERS["minilm"] = dataclasses.replace(shipped[1], attention=attention)
    try:
        model, _, run = tasks.train_classifier("minilm", train, tasks.ORIGINAL_LABELS, settings)
    finally:
        tasks.ENCODER_OPTIMIZER, tasks.CLASSIFIERS["minilm"] = shipped
    del model
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    settings = get_settings({**os.environ, "RAGFT_PROFILE": args.profile})
    train = tasks.training_set(tasks.load_tickets(), settings)
    gflops = matmul_gflops()
    runs = {recipe: [] for recipe in RECIPES}
    for _ in range(args.rounds):
        for recipe in RECIPES:  # alternating, so a slower spell of the machine hits every recipe
            runs[recipe].append(train_with(recipe, train, settings))
    median = {recipe: statistics.median(r.train_seconds for r in runs[recipe]) for recipe in RECIPES}
    lines = [f"# MiniLM classifier: training recipes at the `{args.profile}` profile", "",
             f"`python benchmarks/bench_classifier_training.py --profile {args.profile} --rounds {args.rounds}`", "",
             f"{os.cpu_count()} CPU cores, fp32 matmul {gflops:.0f} GFLOP/s, Python "
             f"{platform.python_version()}; {len(train)} training messages, "
             f"{runs[RECIPES[0]][0].steps} steps.", "",
             "| recipe | optimiser | attention | training s (each round) | median s | speed-up | first loss | final loss |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for recipe in RECIPES:
        name, optimizer, attention = recipe
        times = ", ".join(f"{r.train_seconds:.1f}" for r in runs[recipe])
        last = runs[recipe][-1]
        lines.append(f"| {name} | `{optimizer}` | `{attention}` | {times} | {median[recipe]:.1f} | "
                     f"{median[RECIPES[0]] / median[recipe]:.2f}× | {last.first_loss:.4f} | "
                     f"{last.final_loss:.4f} |")
    lines += ["", "Speed-up: the first recipe's median time over each recipe's."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"classifier-training-{args.profile}.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
