"""Notebook 07's "a new intent appears" for kNN, with the summed vote and the balanced one.

For each profile, the profile's training messages of the ten original intents are indexed into a
throw-away Chroma collection as notebook 07 does, then the first ``task_new_examples`` (and, for
the last table, 1, 3 and 5) `group_travel` examples. Both votes (``tasks.KNN(balanced=False)``
and the default ``balanced=True``) classify the validation and the test split: every
`group_travel` message plus ``task_curve_test_per_label`` messages of each other intent (drawn
with the seed, as ``tasks.test_set`` does), as in notebook 07's step 7. The validation split is where the rule was chosen; test is reported.

    python benchmarks/bench_new_intent.py [--profiles smoke laptop]

Writes the tables, with the command and the machine, to benchmarks/results/new-intent.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import tasks
from ragft_helpers.config import get_settings

RESULTS = Path(__file__).resolve().parent / "results" / "new-intent.md"
COMMAND = "python benchmarks/bench_new_intent.py"
EXAMPLE_COUNTS = (1, 3, 5)


def scores(knn, messages) -> dict[str, float]:
    rows = tasks.evaluate(knn, messages, progress=False)
    recall, low, high = tasks.recall_interval(rows, tasks.NEW_LABEL)
    others = rows[rows["label"] != tasks.NEW_LABEL]
    return {"recall": recall, "low": low, "high": high, "others": others["correct"].mean(),
            "macro_f1": tasks.macro_f1(rows["label"], rows["predicted"], knn.labels)}


def measure(profile: str) -> tuple[list[dict], list[dict]]:
    """(both votes on both splits with the profile's examples; the balanced vote on test with
    fewer examples)."""
    with tempfile.TemporaryDirectory(prefix="ragft-new-intent-") as cache:
        settings = get_settings({**os.environ, "RAGFT_PROFILE": profile, "RAGFT_CACHE_DIR": cache})
        p = settings.profile
        tickets = tasks.load_tickets()
        labels = (*tasks.ORIGINAL_LABELS, tasks.NEW_LABEL)
        collection = tasks.open_tickets(settings)
        tasks.index_tickets(collection, tasks.training_set(tickets, settings))

        def messages(split: str):
            return tasks.new_intent_set(tickets, settings, split)

        fewer = []
        for n in EXAMPLE_COUNTS:
            tasks.index_tickets(collection, tasks.select(tickets, "train", [tasks.NEW_LABEL], n))
            fewer.append({"profile": profile, "examples": n,
                          **scores(tasks.KNN(collection, labels=labels, k=p.task_knn_k), messages("test"))})
        tasks.index_tickets(collection, tasks.select(tickets, "train", [tasks.NEW_LABEL], p.task_new_examples))
        votes = [{"profile": profile, "split": split, "examples": p.task_new_examples,
                  "vote": "balanced" if balanced else "summed",
                  **scores(tasks.KNN(collection, labels=labels, k=p.task_knn_k, balanced=balanced),
                           messages(split))}
                 for split in ("validation", "test") for balanced in (False, True)]
        fewer.append({"profile": profile, "examples": p.task_new_examples,
                      **next(v for v in votes if v["split"] == "test" and v["vote"] == "balanced")})
        return votes, fewer


def report(votes: list[dict], fewer: list[dict]) -> str:
    lines = [f"# A new intent for kNN: the summed and the balanced vote", "",
             f"`{COMMAND}` — {os.cpu_count()} cores, {platform.machine()}, Python "
             f"{platform.python_version()}.", "",
             f"| profile | split | {tasks.NEW_LABEL} examples | vote | {tasks.NEW_LABEL} recall [95% CI] "
             "| accuracy on the other intents | macro-F1, 11 intents |",
             "| --- | --- | ---: | --- | --- | ---: | ---: |"]
    lines += [f"| {v['profile']} | {v['split']} | {v['examples']} | {v['vote']} | {v['recall']:.2f} "
              f"[{v['low']:.2f}, {v['high']:.2f}] | {v['others']:.2f} | {v['macro_f1']:.3f} |" for v in votes]
    lines += ["", f"The balanced vote on the test split with fewer `{tasks.NEW_LABEL}` examples:", "",
              f"| profile | examples | recall [95% CI] | accuracy on the other intents |",
              "| --- | ---: | --- | ---: |"]
    lines += [f"| {f['profile']} | {f['examples']} | {f['recall']:.2f} [{f['low']:.2f}, {f['high']:.2f}] "
              f"| {f['others']:.2f} |" for f in fewer]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["smoke", "laptop"])
    args = parser.parse_args()
    votes, fewer = [], []
    for profile in args.profiles:
        v, f = measure(profile)
        votes += v
        fewer += f
    text = report(votes, fewer)
    print(text)
    RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
