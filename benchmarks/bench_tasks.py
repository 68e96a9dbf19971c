"""Notebook 07's checkpoints over several seeds: do "fine-tuned beats zero-shot", "kNN handles the
new intent" and "trained too long, it over-fits; early stopping helps" hold for every seed, not
only the default one?

    python benchmarks/bench_tasks.py                       # smoke profile, seeds 1 2 3
    python benchmarks/bench_tasks.py --profile laptop --seeds 42

Each seed runs notebook 07 top to bottom in a fresh kernel (``RAGFT_SEED``: the test sample, the
classifiers' initialisation and data order change with it), with its own cache folder, so every
classifier is trained anew. The numbers come from the results file the notebook saves. Writes
``benchmarks/results/tasks-<profile>-seeds.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_notebooks import ROOT, RESULTS, run_seed  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "07_task_finetuning_vs_retrieval.ipynb"
NEW_LABEL = "group_travel"
RECALL_TARGET = 0.6


def one_seed(seed: int, profile: str, timeout: int) -> dict:
    row = run_seed(NOTEBOOK, "tasks", seed, profile, timeout)
    data = row.pop("saved")
    if data is not None:
        table = {r["system"]: r for r in data["table"]}
        fine = {name: r for name, r in table.items() if name.startswith("fine-tuned")}
        best = max(fine, key=lambda name: fine[name]["macro_f1"])
        new = {r["system"]: r for r in data["new_intent"]}
        row.update(best=best, best_f1=table[best], zero=table["zero-shot"], few=table["few-shot"],
                   knn=table["kNN"], knn_recall=new["kNN"][f"{NEW_LABEL} recall"],
                   few_recall=new["few-shot"][f"{NEW_LABEL} recall"],
                   old_recall=new["fine-tuned (10 intents)"][f"{NEW_LABEL} recall"],
                   crossover=data["crossover"], stop=data.get("early_stopping"))
    return row


def stopping_text(stop: dict | None, overfits: bool) -> str:
    if not stop:
        return "not saved"
    return (f"{'yes' if overfits else 'NO'}: epoch {stop['best_epoch']}/{stop['last_epoch']}, "
            f"{stop['validation_best']:.2f} → {stop['validation_last']:.2f}; "
            f"{stop['test_best']:.2f} vs {stop['test_last']:.2f}")


def interval(r: dict) -> str:
    return f"{r['macro_f1']:.3f} [{r['macro_f1_low']:.3f}, {r['macro_f1_high']:.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(seed, args.profile, args.timeout))
        print(f"seed {seed}: {rows[-1]['minutes']:.1f} min, passed {rows[-1]['passed']}", flush=True)
    lines = [f"# Notebook 07's checkpoints over seeds, `{args.profile}` profile", "",
             f"`python benchmarks/bench_tasks.py --profile {args.profile} --seeds "
             f"{' '.join(map(str, args.seeds))}` — each seed runs the notebook in a fresh kernel "
             "with an empty cache (the converted model reused).", "",
             "| seed | best fine-tuned: macro-F1 [95% CI] | zero-shot | few-shot | kNN "
             f"| fine-tuned beats zero-shot (intervals apart) | kNN recall on {NEW_LABEL} "
             "| few-shot recall | old classifier recall | crossover | over-fits; early stopping helps "
             "(validation loss best → last; test loss stopped vs last) | notebook | minutes | peak GB |",
             "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | --- | --- | --- | ---: | ---: |"]
    held, met = [], []
    for r in rows:
        if "best" not in r:
            lines.append(f"| {r['seed']} | no results | | | | | | | | | | failed | {r['minutes']:.1f} "
                         f"| {r['peak_gb']:.2f} |")
            held.append(False)
            continue
        beats = r["best_f1"]["macro_f1_low"] > r["zero"]["macro_f1_high"]
        # The notebook asserts kNN's recall interval clear of zero; its run passing says so.
        handles = r["passed"] and r["knn_recall"] > 0 and r["old_recall"] == 0
        stop = r["stop"]
        overfits = bool(stop) and (stop["validation_last"] > stop["validation_best"]
                                   and stop["test_best"] < stop["test_last"])
        held.append(beats and handles and overfits)
        met.append(r["knn_recall"] >= RECALL_TARGET)
        cross = r["crossover"]
        lines.append(
            f"| {r['seed']} | {r['best']}: {interval(r['best_f1'])} | {interval(r['zero'])} "
            f"| {interval(r['few'])} | {interval(r['knn'])} | {'yes' if beats else 'NO'} "
            f"| {r['knn_recall']:.2f} | {r['few_recall']:.2f} | {r['old_recall']:.2f} "
            f"| {cross['status']}{' at ' + str(cross['per_label']) if cross.get('per_label') else ''} "
            f"| {stopping_text(stop, overfits)} "
            f"| {'passed' if r['passed'] else 'FAILED'} | {r['minutes']:.1f} | {r['peak_gb']:.2f} |")
    lines += ["", f"All three asserted directions held for {sum(held)} of {len(held)} seeds: the best "
              "fine-tuned classifier's macro-F1 interval above zero-shot's; kNN handling the new "
              f"intent once indexed (recall interval clear of zero, asserted by the notebook) while the "
              f"old classifier cannot output {NEW_LABEL}; and the classifier trained too long "
              f"over-fitting, with early stopping giving the lower test loss. The recall target of {RECALL_TARGET} "
              f"(reported, not asserted) was met for {sum(met)} of {len(met)} seeds."]
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"tasks-{args.profile}-seeds.md"
    target.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(held) else 1


if __name__ == "__main__":
    sys.exit(main())
