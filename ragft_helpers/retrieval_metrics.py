"""Retrieval quality on the question set: hit@k and MRR by question type, and a chunk-size sweep."""
from __future__ import annotations

from typing import Sequence

from ragft_helpers import score_cache
from ragft_helpers.config import Settings, get_settings, retrieval_date
from ragft_helpers.corpus import chunk_documents, notice_fields
from ragft_helpers.qa import Question
from ragft_helpers.retrieval import DEFAULT_METHOD, METHODS, retrieve
from ragft_helpers.store import build_index, open_collection, shared_embedding_model


def is_relevant(metadata: dict, question: Question) -> bool:
    """A chunk is relevant when it comes from a source section of the question (or below it)."""
    sections = metadata.get("heading_path", "").split(" > ")
    return any(metadata.get("source") == article and section in sections
               for article, section in question.sources)


def first_relevant_rank(chunk_metadatas: Sequence[dict], question: Question) -> int | None:
    """1-based rank of the first relevant chunk, or ``None``."""
    for rank, metadata in enumerate(chunk_metadatas, start=1):
        if is_relevant(metadata, question):
            return rank
    return None


def retrieval_ranks(questions: Sequence[Question], collection, k: int = 5, *,
                    method: str = DEFAULT_METHOD, variants: bool = False,
                    settings: Settings | None = None):
    """One row per question: ``id``, ``type``, ``phrasing``, ``text`` and ``rank`` of the first
    relevant chunk in the top ``k`` retrieved by ``method`` (``None`` when none is).

    With ``variants`` every realistic rephrasing of each question is a row of its own
    (``phrasing`` "variant"), instead of the canonical question.
    """
    import pandas as pd

    rows = []
    for question in questions:
        texts = question.variants if variants else (question.question,)
        for text in texts:
            chunks = retrieve(text, k, collection, settings=settings, method=method)
            rows.append({"id": question.id, "type": question.type,
                         "phrasing": "variant" if variants else "canonical", "text": text,
                         "rank": first_relevant_rank([c.metadata for c in chunks], question)})
    return pd.DataFrame(rows, columns=["id", "type", "phrasing", "text", "rank"]).astype({"rank": float})


def method_comparison(questions: Sequence[Question], collection, *, methods: Sequence[str] = METHODS,
                      ks: Sequence[int] = (1, 3, 5), settings: Settings | None = None):
    """hit@k and MRR for each retrieval method on the canonical questions and on their variants:
    one row per (method, phrasing), plus the per-question ranks for a closer look. Saved
    (:func:`~ragft_helpers.score_cache.reused`, keyed by the index's content, the questions and
    the embedding model): a re-run reloads both tables."""
    settings = settings or get_settings()
    return score_cache.reused(
        "method-comparison", settings,
        lambda: _method_comparison(questions, collection, methods, ks, settings),
        questions=list(questions), index=collection, methods=list(methods), ks=list(ks),
        embedder=shared_embedding_model())


def _method_comparison(questions, collection, methods, ks, settings):
    import pandas as pd

    rows, ranks = [], []
    for method in methods:
        for variants in (False, True):
            frame = retrieval_ranks(questions, collection, max(ks), method=method,
                                    variants=variants, settings=settings).assign(method=method)
            ranks.append(frame)
            quality = retrieval_quality(frame, ks).loc["all"]
            rows.append({"method": method, "phrasing": "variant" if variants else "canonical",
                         **quality.to_dict()})
    return pd.DataFrame(rows), pd.concat(ranks, ignore_index=True)


def retrieval_quality(ranks, ks: Sequence[int] = (1, 3, 5)):
    """hit@k and MRR per question type and overall, from :func:`retrieval_ranks`."""
    import pandas as pd

    def summary(rows) -> dict:
        ranks_ = rows["rank"]
        values = {f"hit@{k}": float((ranks_ <= k).mean()) for k in ks}
        values["MRR"] = float((1.0 / ranks_).fillna(0.0).mean())
        values["questions"] = len(rows)
        return values

    table = {t: summary(rows) for t, rows in ranks.groupby("type", sort=False)}
    table["all"] = summary(ranks)
    return pd.DataFrame(table).T


def chunk_size_sweep(documents, questions: Sequence[Question], sizes: Sequence[int], *,
                     ks: Sequence[int] = (1, 3, 5), overlap_ratio: float = 0.2,
                     overlap: int | None = None, settings: Settings | None = None):
    """Retrieval quality for each chunk size, each in its own throw-away in-memory index.

    Chunks overlap by ``overlap`` words when given (e.g. 0), else by ``overlap_ratio`` of the size.
    The table is saved (:func:`~ragft_helpers.score_cache.reused`, keyed by the documents' text,
    the questions and the embedding model): a re-run reloads it instead of embedding again.
    """
    settings = settings or get_settings()
    return score_cache.reused(
        "chunk-size-sweep", settings,
        lambda: _chunk_size_sweep(documents, questions, sizes, ks, overlap_ratio, overlap, settings),
        documents=[(d.source, d.title, d.text) for d in documents], questions=list(questions),
        sizes=list(sizes), ks=list(ks), overlap_ratio=overlap_ratio, overlap=overlap,
        embedder=shared_embedding_model(),
        # notices among the documents rank by the date they are judged against
        as_of=str(retrieval_date(settings)) if any(notice_fields(d.text) for d in documents) else None)


def _chunk_size_sweep(documents, questions, sizes, ks, overlap_ratio, overlap, settings):
    import uuid

    import chromadb
    import pandas as pd

    client = chromadb.EphemeralClient()
    rows = []
    for size in sizes:
        chunks = chunk_documents(documents, max_tokens=size,
                                 overlap=int(size * overlap_ratio) if overlap is None else overlap)
        collection = open_collection(name=f"sweep-{size}-{uuid.uuid4().hex[:8]}", client=client)
        build_index(chunks, collection, progress=False, keep_lexical=False)
        quality = retrieval_quality(retrieval_ranks(questions, collection, max(ks), method="dense",
                                                    settings=settings), ks)
        rows.append({"chunk size (words)": size, "chunks": len(chunks),
                     **{key: quality.loc["all", key] for key in [f"hit@{k}" for k in ks] + ["MRR"]}})
        client.delete_collection(collection.name)
    return pd.DataFrame(rows)
