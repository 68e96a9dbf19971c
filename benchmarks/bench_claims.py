"""Notebook 08's claims over several seeds: does each asserted direction hold for every seed, not
only the default one?

    python benchmarks/bench_claims.py                       # smoke profile, seeds 1 2 3
    python benchmarks/bench_claims.py --profile laptop --seeds 42

Each seed runs notebook 08 top to bottom in a fresh kernel (``RAGFT_SEED``: the question sample,
the option order, the fine-tunes' initialisation and data order and the sampled answers change
with it), with its own cache folder, so every fine-tune and the from-scratch control are trained
anew. The numbers come from the claims table the notebook saves before it checks the directions.
The three claims that rest on notebooks 06 and 07 are "not measured" here (their notebooks do not
run, and notebook 08 reports them as such); ``bench_raft.py`` and ``bench_tasks.py`` give their
seeds. Writes
``benchmarks/results/claims-<profile>-seeds.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pandas as pd  # noqa: E402
from bench_notebooks import ROOT, RESULTS, run_seed  # noqa: E402

sys.path.insert(0, str(ROOT))
from ragft_helpers import claims  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "08_rag_vs_finetuning_showdown.ipynb"


def one_seed(seed: int, profile: str, timeout: int) -> dict:
    row = run_seed(NOTEBOOK, "showdown", seed, profile, timeout)
    data = row.pop("saved")
    row["claims"] = {c["claim"]: c for c in data["claims"]} if data else {}
    row["table"] = pd.DataFrame(data["claims"]).set_index("claim") if data else None
    return row


def held(table, name: str) -> bool | None:
    """Whether claim ``name``'s asserted direction held (None: not measured in this notebook)."""
    if table.loc[name, "verdict"] == claims.NOT_MEASURED:
        return None
    return claims.direction_holds(table, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--timeout", type=int, default=3600)
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(seed, args.profile, args.timeout))
        print(f"seed {seed}: {rows[-1]['minutes']:.1f} min, notebook passed {rows[-1]['passed']}", flush=True)
    seeds = " | ".join(f"seed {r['seed']}" for r in rows)
    lines = [f"# Notebook 08's claims over seeds, `{args.profile}` profile", "",
             f"`python benchmarks/bench_claims.py --profile {args.profile} --seeds "
             f"{' '.join(map(str, args.seeds))}` — each seed runs the notebook in a fresh kernel with "
             "an empty cache (the converted model reused). Each cell: the verdict, then whether the "
             "direction notebook 08 asserts held (claims without an asserted direction: the way the "
             "point estimates leaned).", "",
             f"| claim | asserted | {seeds} |", "| --- | --- |" + " --- |" * len(rows)]
    flipped = []
    for claim in claims.CLAIMS:
        asserted = claims.EXPECTED.get(claim.name, "")
        cells = []
        for r in rows:
            found = r["claims"].get(claim.name)
            if found is None:
                cells.append("no results")
                continue
            if asserted:
                ok = held(r["table"], claim.name)
                if ok is False:
                    flipped.append((r["seed"], claim.name))
                mark = {True: "held", False: "**FLIPPED**", None: "—"}[ok]
            else:
                mark = {True: "leans its way", False: "leans the other way", None: "no lean"}[found["direction"]]
            cells.append(f"{found['verdict']}; {mark}")
        lines.append(f"| {claim.name} | {asserted or '—'} | {' | '.join(cells)} |")
    lines += ["", "| seed | minutes | peak GB | notebook |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {r['seed']} | {r['minutes']:.1f} | {r['peak_gb']:.2f} | "
              f"{'passed' if r['passed'] else 'FAILED'} |"
              for r in rows]
    measured = [r for r in rows if r["claims"]]
    lines += ["", f"Asserted directions measured in notebook 08 flipped {len(flipped)} time(s) over "
              f"{len(measured)} seed(s) with results" + (": " + ", ".join(f"{name} (seed {seed})"
                                                                     for seed, name in flipped) if flipped else ".")]
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"claims-{args.profile}-seeds.md"
    target.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if measured and not flipped and all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
