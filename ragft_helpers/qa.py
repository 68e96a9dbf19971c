"""The question set (``data/qa/questions.jsonl``) and retrieval quality measured on it."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ragft_helpers.config import DATA_DIR

KNOWLEDGE_DIR = DATA_DIR / "knowledge"
UPDATES_DIR = DATA_DIR / "knowledge_updates"
QUESTIONS_FILE = DATA_DIR / "qa" / "questions.jsonl"
TYPES = ("single-hop", "multi-hop", "numeric", "unanswerable", "updated")


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str | None
    aliases: tuple[str, ...]
    distractors: tuple[str, ...]
    sources: tuple[tuple[str, str], ...]  # (article, section)
    type: str
    paraphrases: tuple[str, ...] = field(repr=False)
    update: str | None = None
    answer_before: str | None = None

    @property
    def answerable(self) -> bool:
        return self.type != "unanswerable"


def _parse(record: dict) -> Question:
    return Question(
        id=record["id"], question=record["question"], answer=record["answer"],
        aliases=tuple(record["aliases"]), distractors=tuple(record["distractors"]),
        sources=tuple((s["article"], s["section"]) for s in record["source"]),
        type=record["type"], paraphrases=tuple(record["paraphrases"]),
        update=record.get("update"), answer_before=record.get("answer_before"))


def load_questions(path: Path = QUESTIONS_FILE, *, limit: int | None = None, seed: int = 42,
                   types: Sequence[str] | None = None) -> list[Question]:
    """The questions, optionally only some ``types``; ``limit`` keeps a seeded sample that draws
    from every type in turn (so a small budget still covers each type), in file order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    questions = [_parse(json.loads(line)) for line in lines if line.strip()]
    if types is not None:
        unknown = set(types) - set(TYPES)
        if unknown:
            raise ValueError(f"unknown question types {sorted(unknown)}; use some of {TYPES}")
        questions = [q for q in questions if q.type in types]
    if limit is None or limit >= len(questions):
        return questions
    rng = random.Random(seed)
    pools = {t: [q for q in questions if q.type == t] for t in TYPES}
    for pool in pools.values():
        rng.shuffle(pool)
    chosen: list[Question] = []
    while len(chosen) < limit:
        for pool in pools.values():
            if pool and len(chosen) < limit:
                chosen.append(pool.pop())
    order = {q.id: n for n, q in enumerate(questions)}
    return sorted(chosen, key=lambda q: order[q.id])


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


def retrieval_ranks(questions: Sequence[Question], collection, k: int = 5):
    """One row per question: ``id``, ``type``, ``rank`` of the first relevant chunk in the top k."""
    import pandas as pd

    result = collection.query(query_texts=[q.question for q in questions], n_results=k,
                              include=["metadatas"])
    return pd.DataFrame([{"id": q.id, "type": q.type, "rank": first_relevant_rank(metadatas, q)}
                         for q, metadatas in zip(questions, result["metadatas"])])


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
                     ks: Sequence[int] = (1, 3, 5), overlap_ratio: float = 0.2):
    """Retrieval quality for each chunk size, each in its own throw-away in-memory index."""
    import uuid

    import chromadb
    import pandas as pd

    from ragft_helpers.corpus import chunk_documents
    from ragft_helpers.store import build_index, open_collection

    client = chromadb.EphemeralClient()
    rows = []
    for size in sizes:
        chunks = chunk_documents(documents, max_tokens=size, overlap=int(size * overlap_ratio))
        collection = open_collection(name=f"sweep-{size}-{uuid.uuid4().hex[:8]}", client=client)
        build_index(chunks, collection, progress=False)
        quality = retrieval_quality(retrieval_ranks(questions, collection, max(ks)), ks)
        rows.append({"chunk size (words)": size, "chunks": len(chunks),
                     **{key: quality.loc["all", key] for key in [f"hit@{k}" for k in ks] + ["MRR"]}})
        client.delete_collection(collection.name)
    return pd.DataFrame(rows)
