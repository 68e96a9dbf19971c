"""Benchmark result files like those of ``benchmarks/results``, for the speed estimate's tests."""
from pathlib import Path


def recorded_run(folder: Path, notebooks=("00_setup_check", "01_lm")) -> Path:
    """``folder`` holding a run like the project's reference: two training benchmarks (bf16 at
    446.1 GFLOP/s and 249 tokens/s, fp32 at 202.1 and 184) and the laptop profile's notebooks
    (101.8 minutes, trained in bf16)."""
    for name, precision, rate, tokens in (("training.md", "bf16", 446.1, 249),
                                           ("training-fp32.md", "fp32", 202.1, 184)):
        (folder / name).write_text(
            f"optimizer Adafactor(lr=5e-05) and {precision} in both; 2 threads\n\n"
            f"{precision} matmul (1024×1024, best of 20): **{rate} GFLOP/s** → limit\n\n"
            f"| Trainer (`build_trainer`) | 2.05 | 2.18 | {tokens} | 45% |\n"
            f"| plain PyTorch loop | 1.99 | 2.03 | 257 | 46% |\n")
    rows = "".join(f"| {name}.ipynb | 1.0 | 1.00 | ok |\n" for name in notebooks)
    (folder / "notebooks-laptop.md").write_text(
        f"2 cores; training precision bf16.\n\n| notebook | minutes |\n| --- | ---: |\n{rows}"
        "| **total** | **101.8** | **7.18** (max) | |\n")
    return folder
