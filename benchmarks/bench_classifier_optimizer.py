"""Notebook 07's MiniLM classifier with Trainer's plain AdamW against torch's fused AdamW.

The same classifier (``tasks.train_classifier("minilm", ...)``, the profile's training messages and
budget) trained with each optimiser in turn, ``--rounds`` times, in one process: training seconds
and the first and final loss of each run. The fused kernel applies the same update rule, so the
losses should agree to about 1e-4; the ratio of the median times is the speed-up.

    python benchmarks/bench_classifier_optimizer.py --profile smoke --rounds 3

Writes benchmarks/results/classifier-optimizer-<profile>.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import tasks
from ragft_helpers.config import get_settings

RESULTS = Path(__file__).resolve().parent / "results"
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    settings = get_settings({**os.environ, "RAGFT_PROFILE": args.profile})
    train = tasks.training_set(tasks.load_tickets(), settings)
    runs = {optimizer: [] for optimizer in OPTIMIZERS}
    try:
        for _ in range(args.rounds):
            for optimizer in OPTIMIZERS:  # alternating, so a slower spell of the machine hits both
                tasks.ENCODER_OPTIMIZER = optimizer
                model, _, run = tasks.train_classifier("minilm", train, tasks.ORIGINAL_LABELS, settings)
                runs[optimizer].append(run)
                del model
    finally:
        tasks.ENCODER_OPTIMIZER = OPTIMIZERS[1]
    median = {o: statistics.median(r.train_seconds for r in runs[o]) for o in OPTIMIZERS}
    lines = [f"# MiniLM classifier: AdamW against fused AdamW at the `{args.profile}` profile", "",
             f"`python benchmarks/bench_classifier_optimizer.py --profile {args.profile} --rounds {args.rounds}`", "",
             f"{os.cpu_count()} CPU cores, Python {platform.python_version()}; {len(train)} training messages, "
             f"{runs[OPTIMIZERS[0]][0].steps} steps.", "",
             "| optimiser | training s (each round) | median s | first loss | final loss |",
             "| --- | --- | ---: | ---: | ---: |"]
    for optimizer in OPTIMIZERS:
        times = ", ".join(f"{r.train_seconds:.1f}" for r in runs[optimizer])
        last = runs[optimizer][-1]
        lines.append(f"| `{optimizer}` | {times} | {median[optimizer]:.1f} | {last.first_loss:.4f} | "
                     f"{last.final_loss:.4f} |")
    lines += ["", f"Fused AdamW: **{median[OPTIMIZERS[0]] / median[OPTIMIZERS[1]]:.2f}×** faster (median against median)."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"classifier-optimizer-{args.profile}.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
