"""Scoring answers against the question set: one set of rules for every system."""
from __future__ import annotations

import re
import time
import unicodedata
from typing import Callable, Sequence

from ragft_helpers.qa import Question

_ABSTENTION = re.compile(
    r"\b(i\s+(do\s*n[o']?t|don't|cannot|can't|am\s+not\s+sure)\s+(know|say|tell|find|answer)"
    r"|not\s+(mentioned|stated|provided|specified|given|available)"
    r"|(no|not\s+enough)\s+information"
    r"|does\s+not\s+(say|mention|specify|state))",
    re.IGNORECASE)


def normalise(text: str) -> str:
    """Lower case; punctuation dropped except between digits (£14.50, 07:45, 1,200)."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = re.sub(r"[\"()\[\]*]|(?<!\d)[.,:;!?]|[.,:;!?](?!\d)", " ", text)
    return " ".join(text.split())


def contains_answer(text: str, question: Question) -> bool:
    """The normalised answer, or an alias, occurs in the normalised text as whole words."""
    haystack = f" {normalise(text)} "
    return any(f" {normalise(option)} " in haystack
               for option in (question.answer, *question.aliases) if option)


def is_abstention(text: str) -> bool:
    """The answer declines ("I don't know", "the context does not say", ...)."""
    return bool(_ABSTENTION.search(text))


def score_answers(questions: Sequence[Question], respond: Callable[[str], str]):
    """Ask ``respond`` every question; one row each with correctness, abstention and latency.

    ``correct``: an answerable question's answer is contained; an unanswerable one abstained.
    """
    import pandas as pd

    rows = []
    for question in questions:
        start = time.perf_counter()
        text = respond(question.question)
        seconds = time.perf_counter() - start
        abstained = is_abstention(text)
        correct = contains_answer(text, question) if question.answerable else abstained
        rows.append({"id": question.id, "type": question.type, "question": question.question,
                     "expected": question.answer, "answer": text, "correct": correct,
                     "abstained": abstained, "seconds": seconds})
    return pd.DataFrame(rows)
