"""Retrieval: the chunks of the index most relevant to a question, best first — by embedding
(dense), by words (BM25) or both fused (hybrid)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ragft_helpers.config import Settings
from ragft_helpers.fusion import convex_fusion
from ragft_helpers.lexical import lexical_index
from ragft_helpers.store import embed_query, open_collection, require_index

METHODS = ("dense", "bm25", "hybrid")
DEFAULT_METHOD = "hybrid"  # the best of the three on realistically phrased questions (notebook 03)
CANDIDATES = 20  # chunks each side contributes to a hybrid fusion
RRF_C = 60  # reciprocal-rank fusion's constant (Cormack et al. 2009)


@dataclass(frozen=True)
class RetrievedChunk:
    id: str
    text: str  # as indexed: the heading path, a newline, then the body
    metadata: dict = field(hash=False)
    score: float  # cosine similarity to the question, 1 - cosine distance

    @property
    def body(self) -> str:
        heading = self.metadata.get("heading_path", "")
        return self.text[len(heading) + 1:] if self.text.startswith(heading + "\n") else self.text

    @property
    def label(self) -> str:
        """``source > heading path``, e.g. ``tern-card.md > Tern Card > Cost``."""
        return f"{self.metadata.get('source', '?')} > {self.metadata.get('heading_path', '')}"


def check_question(question: str) -> str:
    if not isinstance(question, str) or not question.strip():
        raise ValueError("The question is empty: type a question about the knowledge base, "
                         "e.g. 'How much does the Tern Card cost?'.")
    return question.strip()


def _dense(collection, embedding: list[float], n: int) -> list[tuple[str, str, dict, float]]:
    result = collection.query(query_embeddings=[embedding], n_results=n,
                              include=["documents", "metadatas", "distances"])
    return [(id_, text, metadata, 1.0 - distance) for id_, text, metadata, distance
            in zip(result["ids"][0], result["documents"][0], result["metadatas"][0],
                   result["distances"][0])]


def _fetch(collection, ids: list[str], embedding: list[float]) -> dict[str, tuple[str, str, dict, float]]:
    """Chunks by id with their cosine similarity to the question (the stored vectors are unit)."""
    import numpy as np

    if not ids:
        return {}
    result = collection.get(ids=ids, include=["documents", "metadatas", "embeddings"])
    query = np.asarray(embedding, dtype=np.float32)
    return {id_: (id_, text, metadata, float(np.dot(query, np.asarray(vector, dtype=np.float32))))
            for id_, text, metadata, vector in zip(result["ids"], result["documents"],
                                                   result["metadatas"], result["embeddings"])}


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], c: int = RRF_C) -> list[tuple[str, float]]:
    """Ids ordered by the sum over ``rankings`` of ``1 / (c + rank)`` (rank from 1), best first;
    ties keep the order of first appearance. Ranks only: the fusion hybrid retrieval used before
    :func:`ragft_helpers.fusion.convex_fusion`, which measured better (benchmarks/README.md)."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, id_ in enumerate(ranking, start=1):
            fused[id_] = fused.get(id_, 0.0) + 1.0 / (c + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def retrieve(question: str, k: int = 4, collection=None, *, settings: Settings | None = None,
             method: str = DEFAULT_METHOD) -> list[RetrievedChunk]:
    """The ``k`` chunks most relevant to ``question``, best first.

    ``method``: "dense" (Chroma's nearest embeddings), "bm25" (the lexical index beside it,
    :mod:`ragft_helpers.lexical`) or "hybrid" (the :data:`CANDIDATES` best chunks of each,
    ranked by a weighted sum of their normalised dense and BM25 scores,
    :func:`ragft_helpers.fusion.convex_fusion`). BM25 and hybrid first correct words the index does not
    know (typos) to the closest words it does (:meth:`LexicalIndex.correct`). Every chunk's
    ``score`` is its cosine similarity to the (corrected) question, whatever ranked it, so one
    threshold means the same for every method.
    """
    question = check_question(question)
    if method not in METHODS:
        raise ValueError(f"Unknown retrieval method {method!r}; use one of: {', '.join(METHODS)}.")
    collection = collection if collection is not None else open_collection(settings)
    count = require_index(collection)
    if k <= 0:
        return []
    bm25 = lexical_index(collection, settings) if method != "dense" else None
    query = bm25.correct(question) if bm25 is not None else question
    embedding = embed_query(query)
    depth = min(count, k if method == "dense" else max(k, CANDIDATES))
    dense = _dense(collection, embedding, depth) if method != "bm25" else []
    found = {row[0]: row for row in dense}
    if bm25 is None:
        ranked = list(found)
    else:
        lexical_ids = [id_ for id_, _ in bm25.search(query, depth)]
        if method == "bm25":
            ranked = lexical_ids[:k]
        else:  # each candidate of either side with both of its scores
            found.update(_fetch(collection, [id_ for id_ in lexical_ids if id_ not in found], embedding))
            candidates = list(dict.fromkeys([*(row[0] for row in dense), *lexical_ids]))
            lexical_scores = bm25.scores(query, candidates)
            ranked = [id_ for id_, _ in convex_fusion(
                {id_: (found[id_][3], lexical_scores[id_]) for id_ in candidates})][:k]
        found.update(_fetch(collection, [id_ for id_ in ranked if id_ not in found], embedding))
    return [RetrievedChunk(*found[id_]) for id_ in ranked[:k]]
