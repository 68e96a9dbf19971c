"""Every benchmark at a size that finishes in about 8 minutes on 2 cores, in one report.

    python benchmarks/report.py            # what `make bench` runs

Measures, in this order and in one process (the notebooks in kernels of their own): the machine's
fp32 matmul GFLOP/s, training throughput (``bench_training``: Trainer vs a plain loop), retrieval
and RAG (``bench_rag``: indexing vs raw embedding, re-index vs cold build, query vs embedding the
question alone, RAG answer vs its generation, batched answers and batched multiple choice vs one
question at a time, bf16 vs fp32 answers, hybrid vs dense retrieval quality), the documentation
corpus (``bench_docs``: ragft's chunker vs naive fixed-size chunks) and notebooks 01, 03 and 04
at the smoke profile (``bench_notebooks``); the laptop workbook's minutes come from its last full
run (``benchmarks/results/notebooks-laptop.md``, over an hour: not repeated here). Each stage is
reported as a ratio to its baseline from the same run, and the training, embedding and scoring
stages as a fraction of the matmul limit: training costs about 6 × parameters FLOPs per token, a
forward pass about 2 × parameters (outside the embedding tables for the embedder, whose
lookups cost no FLOPs; the language model's tied output layer multiplies by its table).

Writes benchmarks/RESULTS.md and benchmarks/RESULTS.png, and the tables of each benchmark to
benchmarks/results/ as the scripts do on their own.
"""
from __future__ import annotations

import os
import platform
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_docs  # noqa: E402
import bench_notebooks  # noqa: E402
import bench_rag  # noqa: E402  (imports ragft_helpers first: offline mode when the hub is unreachable)
import bench_training  # noqa: E402
import torch  # noqa: E402
from ragft_helpers.machine import matmul_gflops  # noqa: E402

RESULTS_MD = HERE / "RESULTS.md"
RESULTS_PNG = HERE / "RESULTS.png"
TRAINING_ARGS = ["--steps", "6", "--rounds", "2", "--batch-size", "4", "--block-size", "128"]
RAG_ARGS = ["--repeats", "2", "--answers", "10", "--bf16"]
NOTEBOOKS = ["01", "03", "04"]
NOTEBOOK_PROFILE = "smoke"


def stage_rows(training: dict, rag: dict, gflops: float) -> list[dict]:
    """One row per stage: its measure, its same-run baseline, the ratio and the target."""
    embed_flops_per_token = 2 * rag["embedding_parameters"]
    encode_fraction = rag["encode_tokens_per_s"] * embed_flops_per_token / (gflops * 1e9)
    targets = bench_rag.TARGETS
    rows = [
        {"stage": "training (Trainer)", "measure": f"{training['rates'][training['trainer']]:,.0f} tokens/s",
         "baseline": f"plain PyTorch loop {training['rates'][training['plain']]:,.0f} tokens/s",
         "ratio": training["ratio"], "target": f"≥ {training['target']:.2f}",
         "met": training["ratio"] >= training["target"],
         "fraction": training["rates"][training["trainer"]] / training["limit"]},
        {"stage": "indexing (index_folder)", "measure": f"{rag['index_rate']:.0f} chunks/s",
         "baseline": f"raw encode {rag['encode_rate']:.0f} chunks/s",
         "ratio": rag["index_ratio"], "target": f"≥ {targets['indexing']:.2f}",
         "met": rag["index_ratio"] >= targets["indexing"], "fraction": encode_fraction * rag["index_ratio"]},
        {"stage": "re-index, unchanged", "measure": f"{rag['reindex_s'] * 1000:.0f} ms",
         "baseline": f"cold build {rag['build_s']:.1f} s", "ratio": rag["reindex_share"],
         "target": f"≤ {targets['reindex']:.2f}", "met": rag["reindex_share"] <= targets["reindex"],
         "fraction": None},
        {"stage": f"query (retrieve, k = {rag['k']})", "measure": f"p50 {rag['query_p50']:.1f} ms",
         "baseline": f"embedding the question {rag['query_encode_p50']:.1f} ms",
         "ratio": rag["query_p50"] / rag["query_encode_p50"],
         "target": f"p50 ≤ {targets['query_p50_ms']:.0f} ms", "met": rag["query_p50"] <= targets["query_p50_ms"],
         "fraction": None},
        {"stage": "RAG answer", "measure": f"p50 {rag['answer_p50']:.2f} s",
         "baseline": f"its generation {rag['generation_p50']:.2f} s",
         "ratio": rag["answer_p50"] / rag["generation_p50"],
         "target": f"p50 ≤ {targets['answer_p50_s']:g} s", "met": rag["answer_p50"] <= targets["answer_p50_s"],
         "fraction": None},
    ]
    rows.append({
        "stage": f"batched answers (batches of {rag['answer_batch_size']})",
        "measure": f"{rag['batched_s']:.0f} s for {rag['answers']}, {rag['batched_agreement']:.0%} agree",
        "baseline": f"one by one {rag['reference_s']:.0f} s", "ratio": rag["batched_ratio"],
        "target": f"≥ {targets['batched_speedup']:g}× faster, all agree",
        "met": rag["batched_ratio"] >= targets["batched_speedup"] and rag["batched_agreement"] == 1,
        "fraction": None})
    forward_flops_per_token = 2 * rag["model_parameters"]
    for choice in rag["choices"]:
        context = f"k = {rag['k']} chunks" if choice["retrieval"] else "no retrieval"
        rows.append({
            "stage": f"batched multiple choice, {context}",
            "measure": f"{choice['batched_s']:.1f} s for {choice['questions']}, "
                       f"{choice['agreement']:.0%} agree",
            "baseline": f"per question {choice['alone_s']:.1f} s", "ratio": choice["ratio"],
            "target": "all choices agree", "met": choice["agreement"] == 1,
            "fraction": choice["tokens"] / choice["batched_s"] * forward_flops_per_token / (gflops * 1e9)})
    if "bf16_ratio" in rag:
        rows.append({
            "stage": "bf16 answers", "measure": f"p50 {rag['bf16_p50']:.2f} s, "
                                                 f"{rag['bf16_agreement']:.0%} agree with fp32",
            "baseline": f"fp32 p50 {rag['answer_p50']:.2f} s", "ratio": rag["bf16_ratio"],
            "target": "all agree (then used)", "met": rag["bf16_agreement"] == 1, "fraction": None})
    by_phrasing = {q["phrasing"]: q for q in rag["quality"] if q["method"] == rag["default_method"]}
    dense = {q["phrasing"]: q for q in rag["quality"] if q["method"] == "dense"}
    for phrasing, (hit1, hit5) in bench_rag.QUALITY_TARGETS.items():
        ours, theirs = by_phrasing[phrasing], dense[phrasing]
        rows.append({
            "stage": f"retrieval, {phrasing} questions ({rag['default_method']})",
            "measure": f"hit@1 {ours['hit@1']:.2f}, hit@5 {ours['hit@5']:.2f} ({ours['questions']:.0f})",
            "baseline": f"dense hit@1 {theirs['hit@1']:.2f}, hit@5 {theirs['hit@5']:.2f}",
            "ratio": ours["hit@1"] / theirs["hit@1"], "target": f"≥ {hit1:.2f}, ≥ {hit5:.2f}",
            "met": ours["hit@1"] >= hit1 and ours["hit@5"] >= hit5, "fraction": None})
    return rows


def docs_row(docs: dict) -> dict:
    """ragft's chunker against naive fixed-size chunks on the documentation corpus."""
    compared = bench_docs.comparison(docs["rows"])
    ours, naive = compared["ours"], compared["naive"]
    naive_hit1, naive_hit5 = compared["naive_hit1"], compared["naive_hit5"]
    return {"stage": f"documentation corpus ({docs['questions']} questions)",
            "measure": f"ragft {ours['method']} hit@1 {ours['hit@1']:.2f}, hit@5 {ours['hit@5']:.2f}",
            "baseline": f"naive {naive['method']} hit@1 {naive_hit1:.2f}, hit@5 {naive_hit5:.2f}",
            "ratio": ours["hit@1"] / naive_hit1, "target": "≥ naive on both",
            "met": compared["met"], "fraction": None}


def workbook_row() -> dict | None:
    """The last laptop-profile run of the whole workbook (benchmarks/results/notebooks-laptop.md:
    too long to repeat here) against its target."""
    path = bench_notebooks.RESULTS / "notebooks-laptop.md"
    found = re.search(r"\| \*\*total\*\* \| \*\*([\d.]+)\*\* \| \*\*([\d.]+)\*\*",
                      path.read_text(encoding="utf-8")) if path.is_file() else None
    if not found:
        return None
    minutes, peak = float(found[1]), float(found[2])
    target_minutes, target_peak = bench_notebooks.TARGETS["laptop"]
    return {"stage": "laptop workbook (last full run)", "measure": f"{minutes:.1f} min, peak {peak:.2f} GB",
            "baseline": f"target {target_minutes:.0f} min", "ratio": minutes / target_minutes,
            "target": f"≤ {target_minutes:.0f} min, ≤ {target_peak:.0f} GB",
            "met": minutes <= target_minutes and peak <= target_peak, "fraction": None}


def markdown(stages: list[dict], notebooks: list[tuple], gflops: float, training: dict, rag: dict,
             seconds: float, load_before: float) -> str:
    fraction = lambda f: "" if f is None else f"{f:.0%}"  # noqa: E731
    lines = [
        "# Benchmark results",
        "",
        f"`make bench` (`python benchmarks/report.py`), {time.strftime('%Y-%m-%d')}: "
        f"{os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}; 1-minute load "
        f"average before the run {load_before:.1f}; the whole run took {seconds / 60:.1f} min.",
        "",
        f"fp32 matmul (1024 × 1024, best of 20): **{gflops:.1f} GFLOP/s**; training runs in "
        f"{training['precision']} ({training['train_gflops']:.1f} GFLOP/s). Training limit for "
        f"{training['model']} ({training['parameters'] / 1e6:.1f}M parameters, 6 × parameters FLOPs "
        f"per token): {training['limit']:,.0f} tokens/s. Embedding limit for all-MiniLM-L6-v2 "
        f"({rag['embedding_parameters'] / 1e6:.1f}M parameters outside its embedding tables, 2 × "
        "those FLOPs per token): "
        f"{gflops * 1e9 / (2 * rag['embedding_parameters']):,.0f} tokens/s.",
        "",
        "| stage | measured | baseline (same run) | ratio | target | | fraction of matmul limit |",
        "| --- | --- | --- | ---: | --- | --- | ---: |",
        *[f"| {s['stage']} | {s['measure']} | {s['baseline']} | {s['ratio']:.2f} | {s['target']} | "
          f"{'met' if s['met'] else 'not met'} | {fraction(s['fraction'])} |" for s in stages],
        "",
        f"Notebooks at the `{NOTEBOOK_PROFILE}` profile, each in a fresh kernel (the whole suite "
        "and the laptop profile: `python benchmarks/bench_notebooks.py --profile smoke|laptop`):",
        "",
        "| notebook | minutes | peak RSS (GB) | result |",
        "| --- | ---: | ---: | --- |",
        *[f"| {name} | {s / 60:.1f} | {gb:.2f} | {result} |" for name, s, gb, result, _ in notebooks],
        "",
        "![ratios and fractions of the matmul limit](RESULTS.png)",
        "",
        f"Training: {training['rounds']} rounds × {training['steps']} steps of {training['batch_size']} × "
        f"{training['block_size']} tokens per path, fastest step. Retrieval: {rag['chunks']} chunks "
        f"of {rag['documents']} documents, {rag['queries']} queries, {rag['answers']} answers of "
        f"≤ {rag['max_new_tokens']} new tokens. Ratios are the stage over its baseline: above 1 "
        "for throughput is faster than the baseline, above 1 for latency is the overhead on top of it; "
        "for retrieval quality, hit@1 over the baseline's; for the workbook, minutes over the target. "
        "Scoring's fraction of the matmul limit counts each prompt and option token once (2 × "
        "parameters FLOPs each, fp32), padding excluded.",
    ]
    return "\n".join(lines) + "\n"


def chart(stages: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 1.2 + 0.3 * len(stages)),
                                      gridspec_kw={"width_ratios": [3, 2]})
    names = [s["stage"] for s in stages]
    left.barh(names, [s["ratio"] for s in stages],
              color=["tab:green" if s["met"] else "tab:red" for s in stages])
    left.axvline(1.0, color="grey", linewidth=0.8)
    left.set_xscale("log")
    left.set_xlabel("ratio to the same-run baseline (log scale; green: target met)")
    left.invert_yaxis()
    limited = [s for s in stages if s["fraction"] is not None]
    right.barh([s["stage"] for s in limited], [s["fraction"] * 100 for s in limited], color="tab:blue")
    right.set_xlim(0, 100)
    right.set_xlabel("% of the matmul limit\n(in each stage's precision)")
    right.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    gflops = matmul_gflops()
    training = bench_training.measure(bench_training.parse_args(TRAINING_ARGS), gflops=gflops)
    rag = bench_rag.main(RAG_ARGS)
    docs = bench_docs.run(bench_docs.K)
    notebooks = bench_notebooks.measure(NOTEBOOKS, NOTEBOOK_PROFILE)
    stages = [*stage_rows(training, rag, gflops), docs_row(docs)]
    workbook = workbook_row()
    if workbook:
        stages.append(workbook)
    RESULTS_MD.write_text(markdown(stages, notebooks, gflops, training, rag,
                                   time.perf_counter() - started, load_before), encoding="utf-8")
    chart(stages, RESULTS_PNG)
    print(RESULTS_MD.read_text(encoding="utf-8"))
    print(f"written: {RESULTS_MD}, {RESULTS_PNG}")
    return 0 if all(row[3] == "ok" for row in notebooks) else 1


if __name__ == "__main__":
    sys.exit(main())
