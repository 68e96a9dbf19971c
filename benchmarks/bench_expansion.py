"""The word search's expansion by meaning (``lexical.LexicalIndex.expand``), threshold by threshold.

A question word the BM25 index lacks ("bike") brings the index word nearest to it in meaning
("bicycle") when their embeddings' cosine similarity reaches a threshold. This script indexes the
knowledge base into a throw-away cache, then scores hybrid and BM25 retrieval (hit@1, hit@5, MRR
at the section level, as notebook 03 does) without the expansion and with each threshold, on
the questions of notebook 06's article split: the train articles' questions, where the threshold
was chosen, and the test articles', held out from that choice; each as written and as typed
(every variant).

    python benchmarks/bench_expansion.py [--thresholds 0.5 0.6 0.7 0.8]

Writes the table, with the command and the machine, to benchmarks/results/expansion.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import lexical, raft, retrieval_metrics, store
from ragft_helpers.config import KNOWLEDGE_DIR, get_settings
from ragft_helpers.qa import load_questions

RESULTS = Path(__file__).resolve().parent / "results" / "expansion.md"
COMMAND = "python benchmarks/bench_expansion.py"
NONE = 2.0  # a threshold no cosine similarity reaches: no expansion


def quality(questions, collection, settings, method: str, variants: bool) -> dict[str, float]:
    ranks = retrieval_metrics.retrieval_ranks(questions, collection, 5, method=method,
                                              variants=variants, settings=settings)
    return retrieval_metrics.retrieval_quality(ranks, ks=(1, 5)).loc["all"].to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8])
    args = parser.parse_args()
    chosen = lexical.EXPANSION_SIMILARITY
    rows = []
    with tempfile.TemporaryDirectory(prefix="ragft-expansion-") as cache:
        settings = get_settings({**os.environ, "RAGFT_CACHE_DIR": cache})
        collection = store.open_collection(settings)
        store.index_folder(KNOWLEDGE_DIR, collection, settings=settings, progress=False)
        train, test = raft.split_questions([q for q in load_questions() if q.answerable])
        for threshold in (NONE, *args.thresholds):
            lexical.EXPANSION_SIMILARITY = threshold
            for side, questions in (("train articles", train), ("test articles", test)):
                for variants in (False, True):
                    for method in ("hybrid", "bm25"):
                        q = quality(questions, collection, settings, method, variants)
                        rows.append({"threshold": "none" if threshold == NONE else f"{threshold:g}",
                                     "side": side, "phrasing": "variants" if variants else "canonical",
                                     "method": method, **q})
                        print(rows[-1], flush=True)
    lexical.EXPANSION_SIMILARITY = chosen
    lines = [f"# The word search's expansion by meaning\n", f"`{COMMAND}`\n",
             f"{len(train)} train-article and {len(test)} test-article answerable questions "
             f"(notebook 06's split), each as written and in every variant; section-level hit@k "
             f"and MRR. The package's threshold: {chosen:g}. Machine: {platform.machine()}, "
             f"{os.cpu_count()} CPU cores.\n",
             "| threshold | questions about | phrasing | method | questions | hit@1 | hit@5 | MRR |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['threshold']} | {r['side']} | {r['phrasing']} | {r['method']} | {r['questions']:.0f} | "
              f"{r['hit@1']:.3f} | {r['hit@5']:.3f} | {r['MRR']:.3f} |" for r in rows]
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
