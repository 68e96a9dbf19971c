"""Hybrid retrieval's fusion of the dense and the BM25 side: a convex combination of their scores.

Each candidate chunk (found by either side) gets both of its scores: its cosine similarity to the
question and its BM25 score. Each side is min-max normalised over the candidates, so its best
candidate scores 1 and its worst 0, and the fused score is
``DENSE_WEIGHT * dense + (1 - DENSE_WEIGHT) * bm25`` (Bruch, Gai and Ingber 2023, "An Analysis of
Fusion Functions for Hybrid Retrieval", ACM TOIS). Unlike reciprocal-rank fusion it keeps how far
ahead a side's best candidate is: a chunk far ahead on one side is not overtaken by one that is
merely middling on both.
"""
from __future__ import annotations

from typing import Mapping, Sequence

# The dense side's weight, chosen on the question variants of the train articles
# (raft.split_questions) with bm25s's default BM25 parameters: 0.6-0.7 score alike there (hit@1
# 0.786-0.788, against 0.714 with reciprocal-rank fusion). Confirmed on the test articles' variants (hit@1 0.689 against 0.667)
# and on the documentation corpus of benchmarks/bench_docs.py.
DENSE_WEIGHT = 0.6


def min_max(values: Sequence[float]) -> list[float]:
    """``values`` rescaled to [0, 1] (the smallest 0, the largest 1); all 0 when they are equal,
    since they then tell the candidates apart no more than nothing would."""
    low, high = min(values, default=0.0), max(values, default=0.0)
    if high <= low:
        return [0.0] * len(values)
    return [(value - low) / (high - low) for value in values]


def convex_fusion(candidates: Mapping[str, tuple[float, float]],
                  dense_weight: float = DENSE_WEIGHT) -> list[tuple[str, float]]:
    """(id, fused score) pairs, best first, of ``candidates`` (id -> (dense score, BM25 score));
    each side min-max normalised over the candidates (:func:`min_max`); ties keep the order of
    ``candidates``."""
    if not 0.0 <= dense_weight <= 1.0:
        raise ValueError(f"dense_weight must be between 0 and 1 (got {dense_weight}).")
    ids = list(candidates)
    dense = min_max([candidates[id_][0] for id_ in ids])
    lexical = min_max([candidates[id_][1] for id_ in ids])
    fused = [(id_, dense_weight * d + (1.0 - dense_weight) * b) for id_, d, b in zip(ids, dense, lexical)]
    return sorted(fused, key=lambda item: -item[1])
