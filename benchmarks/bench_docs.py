"""Chunking on real documentation: ragft's chunker against naive fixed-size character chunks.

The corpus is documentation nobody on the project wrote and that every Python installation
carries offline: the Python Language Reference topics that ``pydoc`` shows for ``help("if")``,
``help("SEQUENCES")`` and so on, stored in the standard library's ``pydoc_data.topics``. The
script writes each topic to ``benchmarks/_work/docs/pydoc-topics/<topic>.txt`` (plain text as
Sphinx renders it: ``Title\\n*****`` underlines, indented grammar and code blocks, no Markdown),
then indexes the folder twice into throw-away in-memory Chroma collections:

- ``naive``: consecutive 1,000-character windows of each file (no overlap, no title);
- ``ragft``: ``corpus.load_documents`` + ``corpus.chunk_documents`` with default options.

Each index is searched with ``retrieval.retrieve`` by every method (dense, BM25, hybrid) for the
questions in ``benchmarks/docs_questions.jsonl`` (each names the file(s) that answer it). The
``--k`` chunks retrieved are turned into a ranking of files (each file at the rank of its best
chunk); hit@1, hit@5 and MRR are computed on that file ranking (a file not among the retrieved
chunks counts as a miss).

    OMP_NUM_THREADS=1 python benchmarks/bench_docs.py [--k 20]

Prints a Markdown table and writes it, with the command, corpus and machine, to
benchmarks/results/docs.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import corpus, retrieval, store
from ragft_helpers.config import get_settings
from ragft_helpers.corpus import Chunk

import chromadb
import torch

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "docs"
QUESTIONS = HERE / "docs_questions.jsonl"
RESULTS = HERE / "results" / "docs.md"
COMMAND = "OMP_NUM_THREADS=1 python benchmarks/bench_docs.py"
NAIVE_CHARS = 1000
K = 20  # chunks retrieved per question, turned into a file ranking
CHUNKERS = ("naive", "ragft")


# ---- the corpus --------------------------------------------------------------------------------

def build_corpus(folder: Path) -> dict:
    """Write every ``pydoc_data.topics`` topic to ``folder/<topic>.txt``; describe the corpus."""
    import pydoc_data.topics

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    topics = pydoc_data.topics.topics
    for name, text in sorted(topics.items()):
        (folder / f"{name}.txt").write_text(text if text.endswith("\n") else text + "\n",
                                            encoding="utf-8")
    files = sorted(folder.glob("*.txt"))
    return {"package": "pydoc_data.topics (Python standard library)",
            "version": f"Python {platform.python_version()}", "files": len(files),
            "bytes": sum(path.stat().st_size for path in files),
            "words": sum(len(path.read_text(encoding="utf-8").split()) for path in files)}


def load_questions(path: Path, folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    present = {p.name for p in folder.glob("*.txt")}
    missing = sorted({f for row in rows for f in row["files"]} - present)
    if missing:
        raise SystemExit(f"{path.name} names files this Python's pydoc topics lack: {', '.join(missing)}")
    return rows


# ---- the two chunkers --------------------------------------------------------------------------

def naive_chunks(folder: Path, size: int = NAIVE_CHARS) -> list[Chunk]:
    """Consecutive ``size``-character windows of every ``.txt`` file; metadata ``source`` = file."""
    chunks = []
    for path in sorted(folder.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        for index, start in enumerate(range(0, len(text), size)):
            window = text[start:start + size]
            if not window.strip():
                continue
            digest = hashlib.sha256(f"{path.name}\x1f{start}\x1f{window}".encode()).hexdigest()[:16]
            chunks.append(Chunk(digest, window, {
                "source": path.name, "folder": folder.name, "start_char": start,
                "end_char": start + len(window), "chunk_index": index}))
    return chunks


def ragft_chunks(folder: Path) -> list[Chunk]:
    return corpus.chunk_documents(corpus.load_documents(folder))


# ---- measuring ---------------------------------------------------------------------------------

def file_ranking(retrieved) -> list[str]:
    """Sources in the order of their best chunk."""
    ranking: list[str] = []
    for chunk in retrieved:
        source = chunk.metadata.get("source")
        if source not in ranking:
            ranking.append(source)
    return ranking


def score(questions: list[dict], collection, settings, method: str, k: int) -> dict:
    ranks = []
    for row in questions:
        ranking = file_ranking(retrieval.retrieve(row["question"], k, collection,
                                                  settings=settings, method=method))
        rank = next((i for i, source in enumerate(ranking, 1) if source in row["files"]), None)
        ranks.append(rank)
    n = len(ranks)
    return {"hit@1": sum(r == 1 for r in ranks) / n,
            "hit@5": sum(r is not None and r <= 5 for r in ranks) / n,
            "mrr": sum(1 / r for r in ranks if r) / n}


def run(k: int) -> dict:
    folder = WORK / "pydoc-topics"
    info = build_corpus(folder)
    questions = load_questions(QUESTIONS, folder)
    cache = WORK / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    settings = replace(get_settings(), cache_dir=cache, chroma_url=None)
    client = chromadb.EphemeralClient(settings=chromadb.config.Settings(anonymized_telemetry=False))
    store.embed_query("warm-up")  # load the embedder before timing
    rows, counts, seconds = [], {}, {}
    for name, make in (("naive", naive_chunks), ("ragft", ragft_chunks)):
        chunks = make(folder)
        counts[name] = len(chunks)
        collection = store.reset_index(settings, name=f"bench-docs-{name}", client=client)
        started = time.perf_counter()
        store.build_index(chunks, collection, progress=False, settings=settings)
        seconds[name] = time.perf_counter() - started
        for method in retrieval.METHODS:
            rows.append({"chunker": name, "method": method,
                         **score(questions, collection, settings, method, k)})
            print(f"{name:6s} {method:7s} hit@1 {rows[-1]['hit@1']:.3f} hit@5 "
                  f"{rows[-1]['hit@5']:.3f} MRR {rows[-1]['mrr']:.3f}", file=sys.stderr)
    shutil.rmtree(cache, ignore_errors=True)
    return {"corpus": info, "questions": len(questions), "rows": rows, "chunks": counts,
            "seconds": seconds, "k": k}


def best(rows: list[dict], chunker: str) -> dict:
    return max((r for r in rows if r["chunker"] == chunker),
               key=lambda r: (r["hit@1"], r["hit@5"], r["mrr"]))


def comparison(rows: list[dict]) -> dict:
    """ragft's best method against the naive baseline's best hit@1 and best hit@5 (the target)."""
    ours, naive = best(rows, "ragft"), best(rows, "naive")
    naive_hit1 = max(r["hit@1"] for r in rows if r["chunker"] == "naive")
    naive_hit5 = max(r["hit@5"] for r in rows if r["chunker"] == "naive")
    return {"ours": ours, "naive": naive, "naive_hit1": naive_hit1, "naive_hit5": naive_hit5,
            "met": ours["hit@1"] >= naive_hit1 and ours["hit@5"] >= naive_hit5}


def report(result: dict, command: str) -> str:
    info, rows = result["corpus"], result["rows"]
    compared = comparison(rows)
    ours, naive, met = compared["ours"], compared["naive"], compared["met"]
    naive_hit1, naive_hit5 = compared["naive_hit1"], compared["naive_hit5"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    labels = {"naive": f"naive {NAIVE_CHARS:,}-character windows", "ragft": "ragft `chunk_documents`"}
    lines = [
        f"`{command}`", "",
        f"Corpus: {info['package']}, {info['version']}: {info['files']} topic files, "
        f"{info['bytes'] / 1000:,.0f} kB, {info['words']:,} words (extracted at run time into "
        f"`benchmarks/_work/docs/`). {result['questions']} questions "
        f"(`benchmarks/docs_questions.jsonl`), each with the file(s) that answer it. "
        f"Chunks: naive {result['chunks']['naive']:,}, ragft {result['chunks']['ragft']:,}; "
        f"all-MiniLM-L6-v2, in-memory Chroma, BM25 via bm25s. "
        f"Files ranked by their best chunk among the top {result['k']} retrieved.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), chromadb {chromadb.__version__}, "
        f"Python {platform.python_version()}; load average {load:.1f} at the end; indexing took "
        f"{result['seconds']['naive']:.0f} s (naive) and {result['seconds']['ragft']:.0f} s (ragft).",
        "",
        "| chunker | method | hit@1 | hit@5 | MRR |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {labels[r['chunker']]} | {r['method']} | {r['hit@1']:.3f} | "
                     f"{r['hit@5']:.3f} | {r['mrr']:.3f} |")
    lines += [
        "",
        f"Target: ragft's best method ≥ the naive baseline's best on hit@1 and hit@5. ragft's best, "
        f"{ours['method']}: hit@1 {ours['hit@1']:.3f}, hit@5 {ours['hit@5']:.3f}; naive's best: "
        f"hit@1 {naive_hit1:.3f}, hit@5 {naive_hit5:.3f} (best method {naive['method']}): "
        f"**{'met' if met else 'not met'}**.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=K,
                        help="chunks retrieved per question (default %(default)s)")
    args = parser.parse_args(argv)
    command = COMMAND + (f" --k {args.k}" if args.k != K else "")
    text = report(run(args.k), command)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("# Chunking on real documentation\n\n" + text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
