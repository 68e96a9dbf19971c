"""How fast this machine runs the workbook, against the machine its run times were measured on
(the files of ``benchmarks/results``): matmul GFLOP/s and training throughput per precision."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ragft_helpers.machine import matmul_gflops

BENCHMARK_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"

MATMUL_SIZE, MATMUL_REPEATS = 1024, 20  # the benchmarks' matmul measurement
_MATMUL_RATE = re.compile(r"(\w+) matmul \(1024×1024, best of \d+\): \*\*([\d.]+) GFLOP/s\*\*")
_TRAINING_PRECISION = re.compile(r"and (\w+) in both")
_TRAINER_TOKENS = re.compile(r"^\| Trainer \(`build_trainer`\) \| [\d.]+ \| [\d.]+ \| ([\d,]+) \|",
                            re.MULTILINE)
_PROFILE_TOTAL = re.compile(r"^\| \*\*total\*\* \| \*\*([\d.]+)\*\*", re.MULTILINE)
_PROFILE_PRECISION = re.compile(r"training precision (\w+)")
_PROFILE_NOTEBOOK = re.compile(r"^\| \d\d_\w+\.ipynb \|", re.MULTILINE)


def rate_record(precision: str, gflops: float) -> str:
    """A matmul rate as the benchmarks' results files record it, and :func:`reference_run` reads it."""
    size = f"{MATMUL_SIZE}×{MATMUL_SIZE}"
    return f"{precision} matmul ({size}, best of {MATMUL_REPEATS}): **{gflops:.1f} GFLOP/s**"


def measured_rates(training: str) -> str:
    """This machine's matmul rates in fp32 and, when it trains in another precision, in that one,
    recorded as :func:`rate_record` writes them."""
    records = [rate_record("fp32", matmul_gflops(MATMUL_SIZE, MATMUL_REPEATS))]
    if training != "fp32":
        records.append(rate_record(training, matmul_gflops(MATMUL_SIZE, MATMUL_REPEATS, training)))
    return ", ".join(records)


@dataclass(frozen=True)
class ReferenceRun:
    """The machine the workbook's times were measured on (``benchmarks/results``): its matmul
    GFLOP/s and ``Trainer`` tokens/s per precision, and a profile's whole-workbook minutes,
    trained in ``precision``."""

    rates: dict[str, float]
    training_tokens: dict[str, float]  # tokens/s of bench_training.py's Trainer path
    minutes: float
    precision: str
    source: Path
    notebooks: int  # how many notebooks that run executed

    def training_slowdown(self, precision: str, gflops: float) -> float:
        """How many times longer training takes on a machine that trains in ``precision`` at
        ``gflops``: the matmul ratio in that precision, times how much faster this machine
        trained in its own precision than in that one (e.g. bf16 against fp32)."""
        if precision not in self.rates:
            return self.rates[self.precision] / gflops
        tokens = self.training_tokens
        if {precision, self.precision} <= set(tokens):
            gain = tokens[self.precision] / tokens[precision]
        else:
            gain = self.rates[self.precision] / self.rates[precision]
        return gain * self.rates[precision] / gflops


def reference_run(profile: str, results_dir: Path | None = None) -> ReferenceRun | None:
    """What ``bench_notebooks.py`` (``notebooks-<profile>.md``) and ``bench_training.py``
    (``training*.md``, for matmul rates the notebooks' run did not record) measured, or None."""
    results_dir = results_dir or BENCHMARK_RESULTS
    notebooks = results_dir / f"notebooks-{profile}.md"
    if not notebooks.is_file():
        return None
    text = notebooks.read_text(encoding="utf-8")
    # the rates recorded with the notebooks' run win over those of the training benchmark
    texts = [path.read_text(encoding="utf-8") for path in sorted(results_dir.glob("training*.md"))]
    rates = {precision: float(rate) for recorded in [*texts, text]
             for precision, rate in _MATMUL_RATE.findall(recorded)}
    training_tokens = {}
    for recorded in texts:
        precision, tokens = _TRAINING_PRECISION.search(recorded), _TRAINER_TOKENS.search(recorded)
        if precision and tokens:
            training_tokens[precision.group(1)] = float(tokens.group(1).replace(",", ""))
    total, precision = _PROFILE_TOTAL.search(text), _PROFILE_PRECISION.search(text)
    if total is None or precision is None or "fp32" not in rates or precision.group(1) not in rates:
        return None
    return ReferenceRun(rates, training_tokens, float(total.group(1)), precision.group(1), notebooks,
                        len(_PROFILE_NOTEBOOK.findall(text)))


@dataclass(frozen=True)
class Estimate:
    """How many times longer inference and training take here, and the profile's whole-workbook
    minutes scaled by the smaller and the larger of the two."""

    inference: float
    training: float
    low_minutes: float
    high_minutes: float


def estimate(reference: ReferenceRun, fp32_gflops: float, precision: str,
             training_gflops: float) -> Estimate:
    """Scale ``reference``'s run to a machine with these matmul rates that trains in ``precision``:
    inference runs in fp32 everywhere; training by :meth:`ReferenceRun.training_slowdown`."""
    inference = reference.rates["fp32"] / fp32_gflops
    training = reference.training_slowdown(precision, training_gflops)
    low, high = sorted((inference, training))
    return Estimate(inference, training, reference.minutes * low, reference.minutes * high)
