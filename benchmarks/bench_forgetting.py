"""Notebook 08's forgetting run over seeds, WikiText sources and training precisions: does
"fine-tuning may forget" (held-out WikiText perplexity higher after the run than before) hold on
every one, not only the default?

    python benchmarks/bench_forgetting.py                          # smoke, seeds 42 1 2
    python benchmarks/bench_forgetting.py --profile laptop --seeds 42 --sources configured

Each run calls ``forgetting.forgetting_curve`` as notebook 08 does, in an empty cache folder (the
converted model of ``RAGFT_CACHE_DIR`` reused), so every curve is trained anew. Sources:
``configured`` (``RAGFT_WIKITEXT_DIR``, as CI sets it from ``../shared``) and ``fallback`` (the
corpus in ``data/wikitext-fallback/``, what a machine without it uses). Precisions: ``auto``
(bf16 where the CPU computes it natively) and ``fp32`` (what a CPU without bf16 trains in).
Writes ``benchmarks/results/forgetting-<profile>.md``.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import claims, forgetting
from ragft_helpers.config import get_settings
from ragft_helpers.machine import cpu_model
from ragft_helpers.training import training_precision
from ragft_helpers.wikitext import load_wikitext

RESULTS = Path(__file__).resolve().parent / "results"


def measure(profile: str, seed: int, source: str, precision: str, steps: int | None = None) -> dict:
    env = {**os.environ, "RAGFT_PROFILE": profile, "RAGFT_SEED": str(seed), "RAGFT_PRECISION": precision}
    if source == "fallback":
        env.pop("RAGFT_WIKITEXT_DIR", None)
    elif not env.get("RAGFT_WIKITEXT_DIR"):
        raise SystemExit("--sources configured needs RAGFT_WIKITEXT_DIR (e.g. ../shared/data/wikitext-2-raw)")
    models = Path(os.environ.get("RAGFT_CACHE_DIR", "~/.cache/ragft")).expanduser() / "models"
    with tempfile.TemporaryDirectory(prefix="ragft-forgetting-") as cache:
        if models.is_dir():
            (Path(cache) / "models").symlink_to(models, target_is_directory=True)
        settings = get_settings({**env, "RAGFT_CACHE_DIR": cache})
        if steps:
            settings = settings.with_budgets(forgetting_max_steps=steps)
        wikitext, provenance = load_wikitext(settings, verbose=False)
        start = time.perf_counter()
        curve = forgetting.forgetting_curve(settings, held_out=wikitext["validation"])
        seconds = time.perf_counter() - start
    ends = forgetting.endpoints(curve)
    change = claims.relative_change(ends["base"], ends["ft"])
    return {"seed": seed, "source": provenance.source, "precision": training_precision(settings),
            "steps": ends["steps"], "curve": list(curve["wikitext_perplexity"]), "change": change,
            "supported": change > claims.PERPLEXITY_TOLERANCE, "seconds": seconds}


def report(profile: str, args: argparse.Namespace, rows: list[dict]) -> str:
    command = (f"python benchmarks/bench_forgetting.py --profile {profile} --seeds "
               f"{' '.join(map(str, args.seeds))} --sources {' '.join(args.sources)} "
               f"--precisions {' '.join(args.precisions)}"
               + (f" --steps {' '.join(map(str, args.steps))}" if args.steps else ""))
    lines = [f"# The forgetting run over seeds, `{profile}` profile", "",
             f"`{command}` — {os.cpu_count()} cores, {platform.machine()}, {cpu_model()}, Python "
             f"{platform.python_version()}. Each curve trained anew in an empty cache; WikiText "
             "perplexity measured by `Trainer` before the first step and at each quarter of the run. "
             f"The claim counts as supported above +{claims.PERPLEXITY_TOLERANCE:.0%}.", "",
             "| WikiText source | precision | seed | steps | perplexity along the run | change | verdict | seconds |",
             "| --- | --- | ---: | ---: | --- | ---: | --- | ---: |"]
    for r in rows:
        curve = " → ".join(f"{value:.1f}" for value in r["curve"])
        verdict = "supported" if r["supported"] else "**not supported**"
        lines.append(f"| {r['source']} | {r['precision']} | {r['seed']} | {r['steps']} | {curve} | "
                     f"{r['change']:+.1%} | {verdict} | {r['seconds']:.0f} |")
    held = sum(r["supported"] for r in rows)
    lines += ["", f"Supported on {held} of {len(rows)} runs."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--sources", nargs="+", choices=["configured", "fallback"],
                        default=["configured", "fallback"])
    parser.add_argument("--precisions", nargs="+", choices=["auto", "fp32"], default=["auto", "fp32"])
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help="forgetting_max_steps to try (default: the profile's)")
    parser.add_argument("--output", type=Path, default=None,
                        help="the results file (default: results/forgetting-<profile>.md)")
    args = parser.parse_args()
    rows = []
    for source in args.sources:
        for precision in args.precisions:
            for steps in args.steps or [None]:
                for seed in args.seeds:
                    rows.append(measure(args.profile, seed, source, precision, steps))
                    r = rows[-1]
                    print(f"{source} {r['precision']} {r['steps']} steps, seed {seed}: {r['change']:+.1%} "
                          f"in {r['seconds']:.0f} s", flush=True)
    text = report(args.profile, args, rows)
    print(text)
    (args.output or RESULTS / f"forgetting-{args.profile}.md").write_text(text)
    return 0 if all(r["supported"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
