"""The question set (``data/qa/questions.jsonl``): loading, types and seeded samples."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ragft_helpers.config import OPEN_PROMPTS_FILE, QUESTIONS_FILE
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
    variants: tuple[str, ...] = field(default=(), repr=False)  # realistic rephrasings

    @property
    def answerable(self) -> bool:
        return self.type != "unanswerable"


def _parse(record: dict) -> Question:
    return Question(
        id=record["id"], question=record["question"], answer=record["answer"],
        aliases=tuple(record["aliases"]), distractors=tuple(record["distractors"]),
        sources=tuple((s["article"], s["section"]) for s in record["source"]),
        type=record["type"], paraphrases=tuple(record["paraphrases"]),
        update=record.get("update"), answer_before=record.get("answer_before"),
        variants=tuple(record.get("variants", ())))


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
    return sample(questions, limit, seed)


def sample(questions: Sequence[Question], limit: int | None, seed: int = 42) -> list[Question]:
    """A seeded sample of ``limit`` questions that draws from every type in turn (so a small
    budget still covers each type), in the original order; all of them when ``limit`` is None."""
    questions = list(questions)
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


def load_open_prompts(path: Path = OPEN_PROMPTS_FILE, *, limit: int | None = None) -> list[str]:
    """Open requests with no single right answer (``data/qa/open_prompts.jsonl``), the first
    ``limit`` of them (all when None)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines if line.strip()][:limit]
