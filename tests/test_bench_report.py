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
       "max_new_tokens": 48, "answer_batch_size": 8, "batched_s": 40.0, "reference_s": 100.0,
       "batched_ratio": 2.5, "batched_agreement": 1.0, "model_parameters": 50e6,
       "choices": [{"retrieval": True, "questions": 10, "batched_s": 10.0, "alone_s": 20.0,
                    "ratio": 2.0, "agreement": 0.9, "tokens": 1_000}],
       "default_method": "hybrid",
       "quality": [{"method": m, "phrasing": p, "questions": 100.0, "hit@1": h1, "hit@5": h5}
                   for m, p, h1, h5 in [("dense", "canonical", 0.70, 0.90), ("hybrid", "canonical", 0.80, 0.97),
                                        ("dense", "variant", 0.60, 0.90), ("hybrid", "variant", 0.72, 0.96)]]}


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
    assert "bf16 answers" not in stages  # not measured: no row


def test_the_batched_rows_are_speed_ratios_that_also_need_equal_answers():
    stages = {s["stage"]: s for s in report.stage_rows(TRAINING, RAG, gflops=100.0)}
    row = stages["batched answers (batches of 8)"]
    assert row["ratio"] == 2.5 and row["met"]
    assert stages["RAG answer"]["target"] == "p50 ≤ 1.5 s"
    differing = {s["stage"]: s for s in report.stage_rows(TRAINING, {**RAG, "batched_agreement": 0.9}, gflops=100.0)}
    assert not differing["batched answers (batches of 8)"]["met"]  # faster but not the same answers
    choice = stages["batched multiple choice, k = 3 chunks"]
    assert choice["ratio"] == 2.0 and not choice["met"]  # 90% agree
    assert choice["fraction"] == pytest.approx(0.1)  # 100 tokens/s × 2 × 50e6 FLOPs of 100 GFLOP/s


def test_retrieval_rows_compare_the_default_method_with_dense():
    stages = {s["stage"]: s for s in report.stage_rows(TRAINING, RAG, gflops=100.0)}
    canonical = stages["retrieval, canonical questions (hybrid)"]
    assert canonical["ratio"] == pytest.approx(0.80 / 0.70) and canonical["met"]
    assert not stages["retrieval, variant questions (hybrid)"]["met"]  # 0.72 < 0.75


def test_bf16_row_counts_only_when_every_answer_agrees():
    rag = {**RAG, "bf16_p50": 1.0, "bf16_agreement": 0.95, "bf16_ratio": 2.5}
    row = {s["stage"]: s for s in report.stage_rows(TRAINING, rag, gflops=100.0)}["bf16 answers"]
    assert row["ratio"] == 2.5 and not row["met"]


def test_docs_row_needs_both_hit_rates_at_least_naive():
    rows = [{"chunker": c, "method": m, "hit@1": h1, "hit@5": h5, "mrr": h1}
            for c, m, h1, h5 in [("naive", "dense", 0.80, 0.95), ("naive", "hybrid", 0.85, 0.97),
                                 ("ragft", "dense", 0.82, 0.99), ("ragft", "hybrid", 0.88, 0.96)]]
    row = report.docs_row({"rows": rows, "questions": 30})
    assert row["ratio"] == pytest.approx(0.88 / 0.85)
    assert not row["met"]  # ragft's best method (hybrid) is below naive's best hit@5
    rows[-1]["hit@5"] = 0.99
    assert report.docs_row({"rows": rows, "questions": 30})["met"]


def test_markdown_and_chart(tmp_path):
    stages = report.stage_rows(TRAINING, RAG, gflops=100.0)
    text = report.markdown(stages, [("01_x.ipynb", 30.0, 1.2, "ok", [(25.0, "train()")])], 100.0, TRAINING, RAG, 600.0, 0.1)
    assert "| training (Trainer) | 160 tokens/s | plain PyTorch loop 200 tokens/s | 0.80 | ≥ 0.90 | not met | 80% |" in text
    assert "| 01_x.ipynb | 0.5 | 1.20 | ok |" in text
    png = tmp_path / "chart.png"
    report.chart(stages, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_cell_gets_its_seconds_and_the_peak_memory_sampled_while_it_ran(tmp_path):
    import json

    import bench_notebooks

    def cell(source, start, end):
        return {"cell_type": "code", "source": source, "metadata": {"execution": {
            "iopub.execute_input": f"2026-01-01T00:00:{start:02d}.000000Z",
            "shell.execute_reply": f"2026-01-01T00:00:{end:02d}.000000Z"}}}

    executed = tmp_path / "run.ipynb"
    executed.write_text(json.dumps({"cells": [
        cell("load()\nmore", 0, 10), {"cell_type": "markdown", "source": "text", "metadata": {}},
        cell("train()", 10, 40), cell("x = 1", 41, 42)]}))
    t0 = 1767225600.0  # 2026-01-01T00:00:00Z
    samples = [(t0 + 5, 1 * 2**30), (t0 + 20, 3 * 2**30), (t0 + 39, 2 * 2**30), (t0 + 50, 5 * 2**30)]
    cells = bench_notebooks.cell_seconds(executed, samples)
    assert cells == [(10.0, "load()", 1.0), (30.0, "train()", 3.0), (1.0, "x = 1", 0.0)]
