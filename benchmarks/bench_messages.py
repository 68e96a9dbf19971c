"""Retrieval on customer messages as customers write them: does the index find the article a
message is about?

The queries are the messages of `data/tickets/` (every split: none of them chose a retrieval
setting), written for notebook 07's intents in every register — terse, long-winded, typos,
SMS-speak, formal letters. Each intent is about one article or a few (:data:`ARTICLES`, a
judgement written down here, not learned); `complaint` has none and is left out. A message
counts as found at k when one of its intent's articles is among the k best chunks. Dense, BM25 and
hybrid retrieval are scored on the same messages, against the same fresh index of the knowledge
base. This is a second, independent check of the retrieval that `bench_rag.py` measures on
`data/qa`'s questions and their variants.

    python benchmarks/bench_messages.py

Writes benchmarks/results/messages-retrieval.md.
"""
from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import config, retrieval, store, tasks
from ragft_helpers.config import get_settings
from ragft_helpers.retrieval_metrics import retrieval_quality

RESULTS = Path(__file__).resolve().parent / "results" / "messages-retrieval.md"
TIMETABLES = {"timetable-dunmarrow-crossing.md", "timetable-holm-link.md",
              "timetable-inter-island-shuttle.md", "timetable-orvanay-crossing.md"}
# The knowledge-base articles that answer each intent's messages (data/README.md defines the intents).
ARTICLES = {
    "booking": {"booking-and-reservations.md"},
    "refund": {"refunds-and-changes.md"},
    "timetable": TIMETABLES,
    "fares": {"fares-and-tickets.md", "concessions.md", "islander-fares.md", "tern-card.md"},
    "disruption": {"weather-disruptions.md"},
    "lost_property": {"lost-property.md"},
    "accessibility": {"accessibility.md"},
    "pets": {"travelling-with-pets.md"},
    "vehicles": {"vehicles-and-bicycles.md"},
    "group_travel": {"group-travel.md"},
}
METHODS = ("dense", "bm25", "hybrid")
KS = (1, 3)


def ranks(messages, collection, settings, method: str):
    """One row per message: its intent as ``type`` and the ``rank`` of the first chunk from one of
    its intent's articles among the ``max(KS)`` best (NaN when none is), the shape
    :func:`~ragft_helpers.retrieval_metrics.retrieval_quality` summarises."""
    import pandas as pd

    rows = []
    for message in messages:
        sources = [c.metadata["source"] for c in
                   retrieval.retrieve(message.text, max(KS), collection, settings=settings, method=method)]
        found = [rank for rank, source in enumerate(sources, start=1) if source in ARTICLES[message.label]]
        rows.append({"type": message.label, "rank": found[0] if found else None})
    return pd.DataFrame(rows).astype({"rank": float})


def main() -> None:
    messages = [t for t in tasks.load_tickets() if t.label in ARTICLES]
    with tempfile.TemporaryDirectory(prefix="bench-messages-") as cache:
        settings = get_settings({**os.environ, "RAGFT_CACHE_DIR": cache, "RAGFT_PROFILE": "smoke"})
        collection = store.open_collection(settings)
        store.index_folder(config.KNOWLEDGE_DIR, collection, progress=False, settings=settings)
        results = {method: ranks(messages, collection, settings, method) for method in METHODS}
    quality = {method: retrieval_quality(results[method], KS) for method in METHODS}
    lines = ["# Retrieval on customer messages", "", "`python benchmarks/bench_messages.py`", "",
             f"{os.cpu_count()} CPU cores, Python {platform.python_version()}; {len(messages)} messages of "
             f"`data/tickets/` (every split; `complaint` has no article), each found when an article of "
             "its intent is among the k best chunks.", "",
             "| method | hit@1 | hit@3 |", "| --- | ---: | ---: |"]
    for method in METHODS:
        overall = quality[method].loc["all"]
        lines.append(f"| {method} | {overall['hit@1']:.3f} | {overall['hit@3']:.3f} |")
    lines += ["", "By intent, hybrid (the default):", "", "| intent | messages | hit@1 | hit@3 |",
              "| --- | ---: | ---: | ---: |"]
    for label, row in quality["hybrid"].drop("all").sort_index().iterrows():
        lines.append(f"| {label} | {int(row['questions'])} | {row['hit@1']:.2f} | {row['hit@3']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
