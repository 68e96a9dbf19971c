"""Wall time and peak memory of each notebook, executed top to bottom in a fresh kernel.

    python benchmarks/bench_notebooks.py --profile laptop                 # every notebook
    python benchmarks/bench_notebooks.py --profile smoke 02 04            # some of them

Peak memory is the largest resident set (RSS) of the kernel process tree, sampled every 0.2 s.
Writes benchmarks/results/notebooks-<profile>.md (or ``--output``): the machine (CPU, matmul
GFLOP/s, training precision, which ``ragft doctor`` compares with its own), each notebook's
slowest cells (from the execution timestamps nbclient records) to show where the time goes, and
the cell during which each notebook's memory peaked (the samples taken between that cell's
timestamps).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil

from ragft_helpers.config import get_settings
from ragft_helpers.machine import cpu_model
from ragft_helpers.speed import measured_rates
from ragft_helpers.training import training_precision

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {  # (whole-suite minutes, peak GB of any notebook)
    "smoke": (10.0, 4.0),
    "laptop": (45.0, 4.0),
}
NOTEBOOK_02_PEAK_GB = 3.0  # laptop profile
SLOWEST_CELLS = 3  # per notebook, in the table of where the time goes


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _timestamp(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def cell_seconds(executed: Path, samples: list[tuple[float, int]] = ()) -> list[tuple[float, str, float]]:
    """(seconds, first source line, peak GB) of each code cell of an executed notebook; the peak
    is the largest of ``samples`` ((Unix time, RSS bytes)) taken while the cell ran (0 if none)."""
    cells = []
    for cell in json.loads(executed.read_text())["cells"]:
        stamps = cell.get("metadata", {}).get("execution", {})
        start, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
        if cell["cell_type"] != "code" or not (start and end):
            continue
        start, end = _timestamp(start), _timestamp(end)
        peak = max((rss for at, rss in samples if start <= at <= end), default=0)
        source = "".join(cell["source"]).strip().splitlines()
        cells.append((end - start, source[0][:70] if source else "", peak / 2**30))
    return cells


def run_notebook(path: Path, env: dict[str, str], timeout: int) -> tuple[float, float, int, list]:
    """(seconds, peak GB, exit code, per-cell (seconds, first line, peak GB)) of one nbconvert
    execution."""
    out_dir = Path(tempfile.mkdtemp(prefix="ragft-bench-"))
    command = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
               f"--ExecutePreprocessor.timeout={timeout}", "--output-dir", str(out_dir), str(path)]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(process.pid)
    samples = []
    while process.poll() is None:
        samples.append((time.time(), tree_rss(watched)))
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    if process.returncode:
        print(process.stderr.read().decode()[-2000:], file=sys.stderr)
    executed = out_dir / path.name
    cells = cell_seconds(executed, samples) if executed.exists() else []
    return seconds, max((rss for _, rss in samples), default=0) / 2**30, process.returncode, cells


def run_seed(path: Path, stem: str, seed: int, profile: str, timeout: int) -> dict:
    """Run one notebook with ``RAGFT_SEED=seed`` in a fresh kernel and an empty cache folder (the
    converted model of ``RAGFT_CACHE_DIR`` reused, nothing else), so everything it trains is
    trained anew: ``seed``, ``minutes``, ``peak_gb``, ``passed`` and ``saved``, the results file
    ``<stem>-<profile>.json`` it saved (None when it saved none)."""
    cache = Path(tempfile.mkdtemp(prefix=f"ragft-{stem}-{seed}-"))
    env = {**os.environ, "RAGFT_PROFILE": profile, "RAGFT_SEED": str(seed), "RAGFT_CACHE_DIR": str(cache)}
    models = Path(os.environ.get("RAGFT_CACHE_DIR", "")).expanduser() / "models"
    if models.is_dir():
        (cache / "models").symlink_to(models, target_is_directory=True)
    seconds, peak_gb, code, _ = run_notebook(path, env, timeout)
    saved = cache / "results" / f"{stem}-{profile}.json"
    return {"seed": seed, "minutes": seconds / 60, "peak_gb": peak_gb, "passed": code == 0,
            "saved": json.loads(saved.read_text()) if saved.is_file() else None}


def measure(numbers: list[str], profile: str, timeout: int = 3600) -> list[tuple]:
    """(notebook, seconds, peak GB, result, per-cell seconds) per notebook, run in order."""
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if numbers:
        notebooks = [p for p in notebooks if p.name[:2] in numbers]
    env = {**os.environ, "RAGFT_PROFILE": profile}
    rows = []
    for path in notebooks:
        seconds, peak_gb, code, cells = run_notebook(path, env, timeout)
        rows.append((path.name, seconds, peak_gb, "ok" if code == 0 else f"failed ({code})", cells))
        print(f"{path.name}: {seconds / 60:.1f} min, peak {peak_gb:.2f} GB, {rows[-1][3]}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="*", help="notebook numbers, e.g. 02 04 (default: all)")
    parser.add_argument("--profile", default="laptop")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--output", type=Path, default=None,
                        help="the results file (default: results/notebooks-<profile>[-numbers].md)")
    args = parser.parse_args()
    rows = measure(args.numbers, args.profile, args.timeout)
    precision = training_precision(get_settings())
    failed = any(row[3] != "ok" for row in rows)
    total_minutes = sum(r[1] for r in rows) / 60
    max_peak = max(r[2] for r in rows)
    minutes_target, peak_target = TARGETS.get(args.profile, (float("inf"), float("inf")))
    lines = [
        f"# Notebooks at the `{args.profile}` profile",
        "",
        f"`python benchmarks/bench_notebooks.py --profile {args.profile} {' '.join(args.numbers)}`".replace(" `", "`"),
        "",
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GB RAM, "
        f"{platform.machine()}, Python {platform.python_version()}; "
        f"WikiText from {os.environ.get('RAGFT_WIKITEXT_DIR') or 'the default chain'}; "
        f"CPU {cpu_model()}, {measured_rates(precision)}; training precision {precision}.",
        "",
        "| notebook | minutes | peak RSS (GB) | result |",
        "| --- | ---: | ---: | --- |",
        *[f"| {name} | {s / 60:.1f} | {gb:.2f} | {result} |" for name, s, gb, result, _ in rows],
        f"| **total** | **{total_minutes:.1f}** | **{max_peak:.2f}** (max) | |",
        "",
        f"Targets: whole suite ≤ {minutes_target:g} min "
        f"({'met' if total_minutes <= minutes_target else 'not met'}), peak RSS ≤ {peak_target:g} GB "
        f"({'met' if max_peak <= peak_target else 'not met'}).",
    ]
    nb02 = [r for r in rows if r[0].startswith("02_")]
    if args.profile == "laptop" and nb02:
        verdict = "met" if nb02[0][2] <= NOTEBOOK_02_PEAK_GB else "not met"
        lines.append(f"Notebook 02 peak RSS {nb02[0][2]:.2f} GB, target ≤ {NOTEBOOK_02_PEAK_GB:g} GB ({verdict}).")
    lines += ["", "Where the time goes: each notebook's slowest cells.", "",
              "| notebook | cell starts with | seconds |", "| --- | --- | ---: |"]
    for name, *_, cells in rows:
        for seconds, first_line, _ in sorted(cells, reverse=True)[:SLOWEST_CELLS]:
            lines.append(f"| {name[:2]} | `{first_line.replace('|', '/')}` | {seconds:.0f} |")
    lines += ["", "Where the memory peaks: the cell during which each notebook's RSS was largest.", "",
              "| notebook | cell starts with | peak RSS (GB) |", "| --- | --- | ---: |"]
    for name, *_, cells in rows:
        if cells:
            _, first_line, peak_gb = max(cells, key=lambda cell: cell[2])
            lines.append(f"| {name[:2]} | `{first_line.replace('|', '/')}` | {peak_gb:.2f} |")
    RESULTS.mkdir(exist_ok=True)
    suffix = "-".join(args.numbers)
    target = args.output or RESULTS / f"notebooks-{args.profile}{'-' + suffix if suffix else ''}.md"
    target.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
