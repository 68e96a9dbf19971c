"""Validate the customer-message intent data set in ``data/tickets/``.

One JSONL file per label, ``data/tickets/<label>.jsonl``; every line is
``{"id", "text", "label", "split"}``. These tests use only the standard
library and pytest so that they can run before the project's own package is
installed.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TICKETS_DIR = ROOT / "data" / "tickets"

ORIGINAL_LABELS = {
    "booking",
    "refund",
    "timetable",
    "fares",
    "disruption",
    "lost_property",
    "accessibility",
    "pets",
    "vehicles",
    "complaint",
}
HELD_BACK_LABEL = "group_travel"
LABELS = ORIGINAL_LABELS | {HELD_BACK_LABEL}
SPLITS = {"train", "validation", "test"}
KEYS = {"id", "text", "label", "split"}

# The id prefix of each label; no two labels share one.
KNOWN_PREFIXES = {
    "booking": "bk",
    "refund": "rf",
    "timetable": "tt",
    "fares": "fa",
    "disruption": "di",
    "lost_property": "lp",
    "accessibility": "ac",
    "pets": "pe",
    "vehicles": "ve",
    "complaint": "co",
    "group_travel": "gt",
}
ID_RE = re.compile(r"^([a-z]+)(\d{3,})$")

MIN_PER_ORIGINAL_LABEL = 90
MIN_TEST_PER_ORIGINAL_LABEL = 25
MIN_ORIGINAL_TOTAL = 1000
MIN_HELD_BACK = 60
NEAR_DUPLICATE_JACCARD = 0.8


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits) of ``text``."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.findall(r"[^\W_]+", text)


def normalise(text: str) -> str:
    return " ".join(words(text))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicates_across_splits(
    records: list[dict], threshold: float = NEAR_DUPLICATE_JACCARD
) -> list[tuple[str, str, float]]:
    """Pairs of records in different splits whose word sets overlap too much.

    Returns ``(id_a, id_b, jaccard)`` for every pair with word-set Jaccard
    similarity >= ``threshold``. Two sets can only reach the threshold if the
    smaller has at least ``threshold`` times as many words as the larger, so
    records are sorted by set size and each is compared only with the records
    inside that size window.
    """
    items = sorted(
        ((frozenset(words(r["text"])), r["split"], r["id"]) for r in records),
        key=lambda item: len(item[0]),
    )
    found = []
    for i, (set_a, split_a, id_a) in enumerate(items):
        for set_b, split_b, id_b in items[i + 1 :]:
            if len(set_a) < threshold * len(set_b):
                break
            if split_a == split_b:
                continue
            score = jaccard(set_a, set_b)
            if score >= threshold:
                found.append((id_a, id_b, score))
    return found


@functools.cache
def ticket_files() -> tuple[Path, ...]:
    return tuple(sorted(TICKETS_DIR.glob("*.jsonl")))


@functools.cache
def load_records() -> tuple[tuple[str, int, dict], ...]:
    """``(file name, line number, record)`` for every line of every file."""
    rows = []
    for path in ticket_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert line.strip(), f"{path.name}:{number}: blank line"
            rows.append((path.name, number, json.loads(line)))
    return tuple(rows)


def records() -> list[dict]:
    return [record for _, _, record in load_records()]


# ---------------------------------------------------------------------------
# Files and schema
# ---------------------------------------------------------------------------


def test_tickets_directory_has_files():
    assert TICKETS_DIR.is_dir(), f"missing {TICKETS_DIR}"
    assert ticket_files(), f"no .jsonl files in {TICKETS_DIR}"


def test_file_names_are_labels():
    stray = [p.name for p in ticket_files() if p.stem not in LABELS]
    assert not stray, f"files not named after a label: {stray}"


def test_every_label_has_a_file():
    present = {p.stem for p in ticket_files()}
    missing = sorted(LABELS - present)
    assert not missing, f"no data file for labels: {missing}"


def test_schema():
    problems = []
    for name, number, record in load_records():
        where = f"{name}:{number}"
        if not isinstance(record, dict) or set(record) != KEYS:
            problems.append(f"{where}: keys must be exactly {sorted(KEYS)}")
            continue
        if not all(isinstance(record[key], str) for key in KEYS):
            problems.append(f"{where}: every value must be a string")
            continue
        if not words(record["text"]):
            problems.append(f"{where}: empty text")
        if record["text"] != record["text"].strip():
            problems.append(f"{where}: text has leading or trailing whitespace")
        if record["label"] not in LABELS:
            problems.append(f"{where}: unknown label {record['label']!r}")
        if record["split"] not in SPLITS:
            problems.append(f"{where}: unknown split {record['split']!r}")
        if record["label"] != Path(name).stem:
            problems.append(f"{where}: label {record['label']!r} in file {name}")
        if not ID_RE.match(record["id"]):
            problems.append(f"{where}: malformed id {record['id']!r}")
    assert not problems, "\n".join(problems[:50])


def test_ids_are_unique():
    counts = Counter(r["id"] for r in records())
    repeated = sorted(i for i, n in counts.items() if n > 1)
    assert not repeated, f"repeated ids: {repeated}"


def test_each_label_has_its_own_id_prefix():
    prefixes = defaultdict(set)
    for r in records():
        match = ID_RE.match(r["id"])
        if match:
            prefixes[r["label"]].add(match.group(1))
    problems = []
    for label, found in sorted(prefixes.items()):
        if len(found) != 1:
            problems.append(f"{label}: several id prefixes {sorted(found)}")
        elif label in KNOWN_PREFIXES and found != {KNOWN_PREFIXES[label]}:
            problems.append(f"{label}: prefix {found} instead of {KNOWN_PREFIXES[label]!r}")
    owners = defaultdict(set)
    for label, found in prefixes.items():
        for prefix in found:
            owners[prefix].add(label)
    for prefix, labels in sorted(owners.items()):
        if len(labels) > 1:
            problems.append(f"prefix {prefix!r} used by several labels: {sorted(labels)}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# Counts and splits
# ---------------------------------------------------------------------------


def test_counts_per_label():
    total = Counter(r["label"] for r in records())
    in_test = Counter(r["label"] for r in records() if r["split"] == "test")
    problems = []
    for label in sorted(ORIGINAL_LABELS):
        if total[label] < MIN_PER_ORIGINAL_LABEL:
            problems.append(f"{label}: {total[label]} messages, need >= {MIN_PER_ORIGINAL_LABEL}")
        if in_test[label] < MIN_TEST_PER_ORIGINAL_LABEL:
            problems.append(
                f"{label}: {in_test[label]} test messages, need >= {MIN_TEST_PER_ORIGINAL_LABEL}"
            )
    original_total = sum(total[label] for label in ORIGINAL_LABELS)
    if original_total < MIN_ORIGINAL_TOTAL:
        problems.append(f"original labels: {original_total} messages, need >= {MIN_ORIGINAL_TOTAL}")
    if total[HELD_BACK_LABEL] < MIN_HELD_BACK:
        problems.append(
            f"{HELD_BACK_LABEL}: {total[HELD_BACK_LABEL]} messages, need >= {MIN_HELD_BACK}"
        )
    assert not problems, "\n".join(problems)


def test_every_label_in_every_split():
    seen = {(r["label"], r["split"]) for r in records()}
    missing = [f"{label}/{split}" for label in sorted(LABELS) for split in sorted(SPLITS)
               if (label, split) not in seen]
    assert not missing, f"label/split combinations with no messages: {missing}"


# ---------------------------------------------------------------------------
# Duplicates
# ---------------------------------------------------------------------------


def test_no_exact_duplicates():
    by_text = defaultdict(list)
    for r in records():
        by_text[normalise(r["text"])].append(r["id"])
    repeated = [ids for ids in by_text.values() if len(ids) > 1]
    assert not repeated, f"messages with the same normalised text: {repeated}"


def test_no_near_duplicates_across_splits():
    pairs = near_duplicates_across_splits(records())
    shown = [f"{a} ~ {b} (Jaccard {score:.2f})" for a, b, score in pairs[:30]]
    assert not pairs, "near-duplicates in different splits:\n" + "\n".join(shown)


def test_near_duplicate_check_flags_a_planted_pair():
    planted = [
        {"id": "xx001", "split": "train",
         "text": "What time is the last boat from Kettlebay to Marlstow on Saturday?"},
        {"id": "xx002", "split": "test",
         "text": "what time is the last boat from kettlebay to marlstow on a saturday"},
        {"id": "xx003", "split": "validation",
         "text": "Can I get my money back for the cancelled Dunmarrow sailing?"},
        {"id": "xx004", "split": "train",
         "text": "How much is a senior return on the Holm Link?"},
        # Same words as xx004 but in the same split: not a leak between splits.
        {"id": "xx005", "split": "train",
         "text": "how much is a senior return on the holm link"},
    ]
    pairs = near_duplicates_across_splits(planted)
    assert [(a, b) for a, b, _ in pairs] in ([("xx001", "xx002")], [("xx002", "xx001")])
    assert pairs[0][2] >= NEAR_DUPLICATE_JACCARD
