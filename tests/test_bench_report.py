"""The benchmark report's arithmetic and chart, on synthetic measurements (no benchmark runs)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import report  # noqa: E402

TRAINING = {"model": "m", "parameters": 100e6, "limit": 200.0, "precision": "bf16", "train_gflops": 120.0, "ratio": 0.8, "target": 0.9,
            "rates": {"T": 160.0, "P": 200.0}, "trainer": "T", "plain": "P",
            "rounds": 2, "steps": 6, "batch_size": 4, "block_size": 128}
RAG = {"embedding_parameters": 20e6, "encode_tokens_per_s": 2_500.0, "encode_rate": 80.0,
       "index_rate": 76.0, "index_ratio": 0.95, "reindex_s": 0.02, "build_s": 5.0,
       "reindex_share": 0.004, "k": 3, "query_p50": 14.0, "query_encode_p50": 7.0, "answer_p50": 2.5,
       "generation_p50": 2.4, "chunks": 365, "documents": 35, "queries": 263, "answers": 10,
       "max_new_tokens": 48}


def test_stage_rows_compare_each_stage_with_its_baseline():
    stages = {s["stage"]: s for s in report.stage_rows(TRAINING, RAG, gflops=100.0)}
    assert stages["training (Trainer)"]["ratio"] == pytest.approx(0.8)
    assert not stages["training (Trainer)"]["met"]  # 0.8 < 0.9
    assert stages["training (Trainer)"]["fraction"] == pytest.approx(0.8)  # 160 of 200 tokens/s
    # 2,500 tokens/s × 2 × 20e6 FLOPs = 100 GFLOP/s: the whole limit, times indexing's 0.95
    assert stages["indexing (index_folder)"]["fraction"] == pytest.approx(0.95)
    assert stages["query (retrieve, k = 3)"]["ratio"] == pytest.approx(2.0)
    assert stages["query (retrieve, k = 3)"]["met"]  # 14 ms ≤ 30 ms
    assert not stages["RAG answer"]["met"]  # 2.5 s > 1.5 s
    assert stages["re-index, unchanged"]["met"]
    assert not any(name.startswith("batched") for name in stages)  # not measured: no row


def test_the_batched_answers_row_is_a_speed_ratio_against_one_by_one():
    rag = {**RAG, "answer_batch_size": 8, "batched_s": 40.0, "reference_s": 100.0,
           "batched_ratio": 2.5}
    stages = {s["stage"]: s for s in report.stage_rows(TRAINING, rag, gflops=100.0)}
    row = stages["batched answers (batches of 8)"]
    assert row["ratio"] == 2.5 and row["met"] and row["target"] == "≥ 2× faster"
    assert stages["RAG answer"]["target"] == "p50 ≤ 1.5 s"


def test_markdown_and_chart(tmp_path):
    stages = report.stage_rows(TRAINING, RAG, gflops=100.0)
    text = report.markdown(stages, [("01_x.ipynb", 30.0, 1.2, "ok", [(25.0, "train()")])], 100.0, TRAINING, RAG, 600.0, 0.1)
    assert "| training (Trainer) | 160 tokens/s | plain PyTorch loop 200 tokens/s | 0.80 | ≥ 0.90 | not met | 80% |" in text
    assert "| 01_x.ipynb | 0.5 | 1.20 | ok |" in text
    png = tmp_path / "chart.png"
    report.chart(stages, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
