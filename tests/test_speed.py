"""Scaling the benchmarks' run times to another machine: the recorded run is read back from
benchmarks/results, and training slows down by the matmul ratio and the lost precision gain."""
from ragft_helpers import speed
from tests.recorded_runs import recorded_run


def test_the_recorded_run_is_read_from_the_benchmark_results(tmp_path):
    reference = speed.reference_run("laptop", recorded_run(tmp_path))
    assert reference.rates == {"bf16": 446.1, "fp32": 202.1}
    assert reference.training_tokens == {"bf16": 249.0, "fp32": 184.0}
    assert (reference.minutes, reference.precision, reference.notebooks) == (101.8, "bf16", 2)
    assert speed.reference_run("full", tmp_path) is None  # never measured
    # the project's own results hold such a run for the default profile, in both precisions
    recorded = speed.reference_run("laptop")
    assert {"fp32", "bf16"} <= set(recorded.rates) and {"fp32", "bf16"} <= set(recorded.training_tokens)


def test_training_slows_down_by_the_matmul_ratio_and_the_lost_precision_gain(tmp_path):
    def run(tokens):
        return speed.ReferenceRun({"fp32": 200.0, "bf16": 400.0}, tokens, 10.0, "bf16", tmp_path, 9)

    # the same precision: the matmul ratio alone
    assert run({}).training_slowdown("bf16", 200.0) == 2.0
    # fp32 here: half the fp32 rate, and the bf16 gain there, measured by its Trainer (1.25×) ...
    assert run({"bf16": 250.0, "fp32": 200.0}).training_slowdown("fp32", 100.0) == 2.5
    # ... or, without those measurements, the matmul rates' ratio (2×)
    assert run({}).training_slowdown("fp32", 100.0) == 4.0
    assert run({}).training_slowdown("fp16", 100.0) == 4.0  # a precision never measured there


def test_the_benchmarks_record_matmul_rates_in_the_form_the_doctor_reads():
    assert speed._MATMUL_RATE.findall(speed.rate_record("bf16", 446.1)) == [("bf16", "446.1")]
    recorded = speed.measured_rates("fp32")  # what bench_notebooks.py writes into its results file
    assert [precision for precision, _ in speed._MATMUL_RATE.findall(recorded)] == ["fp32"]
