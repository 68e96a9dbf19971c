"""Validate the knowledge base, the dated updates and the QA set in ``data/``.

These tests use only the standard library and pytest so that they can run
before the project's own package is installed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
KNOWLEDGE_DIR = DATA / "knowledge"
UPDATES_DIR = DATA / "knowledge_updates"
QA_FILE = DATA / "qa" / "questions.jsonl"

MIN_ARTICLES = 30
MIN_WORDS = 12_000
MIN_UPDATES = 4
MIN_QUESTIONS = 150
MIN_PER_TYPE = {"unanswerable": 15, "updated": 10}
MAX_ANSWER_WORDS = 8
MIN_VARIANTS = 3

ALLOWED_TYPES = {"single-hop", "multi-hop", "numeric", "unanswerable", "updated"}
BASE_KEYS = {
    "id",
    "question",
    "answer",
    "aliases",
    "distractors",
    "source",
    "type",
    "paraphrases",
    "variants",
}
UPDATED_KEYS = BASE_KEYS | {"update", "answer_before"}

HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*$")
KEBAB_MD_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\.md$")
UPDATE_NAME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})-[a-z0-9]+(?:-[a-z0-9]+)*\.md$")
EFFECTIVE_RE = re.compile(r"^Effective:[ \t]*(\S+)[ \t]*$", re.MULTILINE)
SUPERSEDES_RE = re.compile(r"^Supersedes:[ \t]*(\S.*?)[ \t]*$", re.MULTILINE)


def superseded_files(text: str) -> list[str]:
    """The files a notice's ``Supersedes:`` lines name (one or more, separated by commas)."""
    return [name.strip() for line in SUPERSEDES_RE.findall(text) for name in line.split(",")]


# ---------------------------------------------------------------------------
# Markdown section helpers
# ---------------------------------------------------------------------------


def parse_headings(text: str) -> list[tuple[int, int, str]]:
    """Return ``(line_index, level, title)`` for every ATX heading.

    Lines inside fenced code blocks are ignored.
    """
    headings = []
    in_fence = False
    for index, line in enumerate(text.splitlines()):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        match = HEADING_RE.match(line)
        if match:
            headings.append((index, len(match.group(1)), match.group(2)))
    return headings


def split_sections(text: str) -> dict[str, str]:
    """Map each heading title to its section text.

    A section runs from its heading line up to (not including) the next
    heading of the same or a higher level (fewer or equal ``#``), so a ``##``
    section includes its ``###`` subsections.  If a title occurs more than
    once in a document, the texts are joined.
    """
    lines = text.splitlines()
    headings = parse_headings(text)
    sections: dict[str, str] = {}
    for position, (start, level, title) in enumerate(headings):
        end = len(lines)
        for next_start, next_level, _ in headings[position + 1 :]:
            if next_level <= level:
                end = next_start
                break
        body = "\n".join(lines[start:end])
        sections[title] = f"{sections[title]}\n{body}" if title in sections else body
    return sections


def sub_headings(text: str) -> set[str]:
    """Titles of the level-2 and level-3 headings of a document."""
    return {title for _, level, title in parse_headings(text) if level in (2, 3)}


def contains(haystack: str, needle: str) -> bool:
    return needle.casefold() in haystack.casefold()


def normalise(text: str) -> str:
    """Lower-case, turn punctuation into spaces and collapse whitespace."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def contains_words(text: str, phrase: str) -> bool:
    """True if ``phrase`` occurs in ``text`` as whole words, after normalising both."""
    needle = normalise(phrase)
    return bool(needle) and f" {needle} " in f" {normalise(text)} "


def variant_problems(questions: list[dict]) -> list[str]:
    """Every rule for the ``variants`` field, as a list of error messages.

    Each question needs at least ``MIN_VARIANTS`` non-empty strings. No variant
    may contain the answer, an alias or (for ``updated``) ``answer_before`` as
    whole words, and no two texts among all questions and all variants may be
    the same after normalising.
    """
    errors = []
    owners = {normalise(q["question"]): f"{q['id']} question" for q in questions}
    for q in questions:
        qid = q["id"]
        variants = q.get("variants")
        if not isinstance(variants, list) or len(variants) < MIN_VARIANTS:
            errors.append(f"{qid}: needs a list of at least {MIN_VARIANTS} variants")
            continue
        giveaways = [q.get("answer"), *q.get("aliases", [])]
        if q.get("type") == "updated":
            giveaways.append(q.get("answer_before"))
        for variant in variants:
            if not isinstance(variant, str) or not variant.strip():
                errors.append(f"{qid}: variants must be non-empty strings")
                continue
            for giveaway in giveaways:
                if isinstance(giveaway, str) and contains_words(variant, giveaway):
                    errors.append(f"{qid}: variant gives away {giveaway!r}: {variant!r}")
            key = normalise(variant)
            if key in owners:
                errors.append(f"{qid}: variant {variant!r} duplicates the {owners[key]}")
            else:
                owners[key] = f"{qid} variant"
    return errors


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def articles() -> dict[str, str]:
    assert KNOWLEDGE_DIR.is_dir(), f"missing {KNOWLEDGE_DIR}"
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(KNOWLEDGE_DIR.glob("*.md"))}


@pytest.fixture(scope="module")
def updates() -> dict[str, str]:
    assert UPDATES_DIR.is_dir(), f"missing {UPDATES_DIR}"
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(UPDATES_DIR.glob("*.md"))}


@pytest.fixture(scope="module")
def raw_lines() -> list[str]:
    assert QA_FILE.is_file(), f"missing {QA_FILE}"
    return [line for line in QA_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def questions(raw_lines) -> list[dict]:
    return [json.loads(line) for line in raw_lines]


@pytest.fixture(scope="module")
def sections(articles) -> dict[str, dict[str, str]]:
    return {name: split_sections(text) for name, text in articles.items()}


def source_text(question: dict, sections: dict[str, dict[str, str]]) -> str:
    parts = []
    for src in question["source"]:
        parts.append(sections.get(src["article"], {}).get(src["section"], ""))
    return "\n".join(parts)


def report(errors: list[str]) -> str:
    shown = errors[:25]
    more = f"\n... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
    return "\n".join(shown) + more


# ---------------------------------------------------------------------------
# The section helper itself
# ---------------------------------------------------------------------------


def test_split_sections_respects_heading_levels():
    doc = "\n".join(
        [
            "# Title",
            "intro",
            "## Alpha",
            "alpha text",
            "### Alpha One",
            "alpha one text",
            "## Beta",
            "beta text",
            "```",
            "# not a heading",
            "```",
        ]
    )
    parsed = split_sections(doc)
    assert set(parsed) == {"Title", "Alpha", "Alpha One", "Beta"}
    assert "alpha one text" in parsed["Alpha"]
    assert "beta text" not in parsed["Alpha"]
    assert parsed["Alpha One"] == "### Alpha One\nalpha one text"
    assert "# not a heading" in parsed["Beta"]
    assert sub_headings(doc) == {"Alpha", "Alpha One", "Beta"}


# ---------------------------------------------------------------------------
# Knowledge base
# ---------------------------------------------------------------------------


def test_knowledge_base_size(articles):
    assert len(articles) >= MIN_ARTICLES, f"only {len(articles)} articles"
    words = sum(len(text.split()) for text in articles.values())
    assert words >= MIN_WORDS, f"only {words} words"


def test_article_structure(articles):
    errors = []
    for name, text in articles.items():
        if not KEBAB_MD_RE.match(name):
            errors.append(f"{name}: file name is not lowercase-kebab-case .md")
        lines = text.splitlines()
        if not lines or not lines[0].startswith("# ") or not lines[0][2:].strip():
            errors.append(f"{name}: first line must be a '# Title' heading")
        levels = [level for _, level, _ in parse_headings(text)]
        if levels.count(1) != 1:
            errors.append(f"{name}: expected exactly one level-1 heading, found {levels.count(1)}")
        if 2 not in levels:
            errors.append(f"{name}: no '## Section' headings")
        if re.search(r"<[a-zA-Z/][^>]*>", text):
            errors.append(f"{name}: contains HTML")
    assert not errors, report(errors)


# ---------------------------------------------------------------------------
# Dated updates
# ---------------------------------------------------------------------------


def test_update_files(updates, articles):
    assert len(updates) >= MIN_UPDATES, f"only {len(updates)} update files"
    errors = []
    for name, text in updates.items():
        name_match = UPDATE_NAME_RE.match(name)
        if not name_match:
            errors.append(f"{name}: name must look like YYYY-MM-DD-some-title.md")
        if not text.startswith("# "):
            errors.append(f"{name}: must start with a '# Title' line")
        effective = EFFECTIVE_RE.findall(text)
        if len(effective) != 1:
            errors.append(f"{name}: needs exactly one 'Effective: YYYY-MM-DD' line")
        else:
            try:
                dt.date.fromisoformat(effective[0])
            except ValueError:
                errors.append(f"{name}: Effective date {effective[0]!r} is not YYYY-MM-DD")
            if name_match and name_match.group(1) != effective[0]:
                errors.append(f"{name}: Effective date differs from the file-name date")
        supersedes = superseded_files(text)
        if not supersedes:
            errors.append(f"{name}: needs a 'Supersedes: <article>.md' line")
        for target in supersedes:
            if target not in articles:
                errors.append(f"{name}: supersedes unknown article {target!r}")
    assert not errors, report(errors)


# ---------------------------------------------------------------------------
# QA set: format
# ---------------------------------------------------------------------------


def test_every_line_is_a_json_object(raw_lines):
    errors = []
    for number, line in enumerate(raw_lines, start=1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: {exc}")
            continue
        if not isinstance(obj, dict):
            errors.append(f"line {number}: not a JSON object")
    assert not errors, report(errors)


def test_types_and_key_sets(questions):
    errors = []
    for q in questions:
        qid = q.get("id", "?")
        qtype = q.get("type")
        if qtype not in ALLOWED_TYPES:
            errors.append(f"{qid}: type {qtype!r} not allowed")
            continue
        expected = UPDATED_KEYS if qtype == "updated" else BASE_KEYS
        if set(q) != expected:
            missing = sorted(expected - set(q))
            extra = sorted(set(q) - expected)
            errors.append(f"{qid}: missing keys {missing}, unexpected keys {extra}")
    assert not errors, report(errors)


def test_field_types(questions):
    errors = []
    for q in questions:
        qid = q["id"]
        if not isinstance(q["id"], str) or not q["id"]:
            errors.append(f"{qid}: id must be a non-empty string")
        if not isinstance(q["question"], str) or not q["question"].strip():
            errors.append(f"{qid}: question must be a non-empty string")
        if not isinstance(q["aliases"], list) or not all(isinstance(a, str) for a in q["aliases"]):
            errors.append(f"{qid}: aliases must be a list of strings")
        if not isinstance(q["source"], list) or not q["source"]:
            errors.append(f"{qid}: source must be a non-empty list")
        else:
            for src in q["source"]:
                if not isinstance(src, dict) or set(src) != {"article", "section"}:
                    errors.append(f"{qid}: source entries need exactly 'article' and 'section'")
        if q["type"] == "unanswerable":
            if q["answer"] is not None:
                errors.append(f"{qid}: unanswerable questions must have answer null")
            if q["aliases"] != []:
                errors.append(f"{qid}: unanswerable questions must have no aliases")
        elif not isinstance(q["answer"], str) or not q["answer"].strip():
            errors.append(f"{qid}: answerable questions need a non-empty string answer")
        elif len(q["answer"].split()) > MAX_ANSWER_WORDS:
            errors.append(f"{qid}: answer is longer than {MAX_ANSWER_WORDS} words")
    assert not errors, report(errors)


def test_unique_ids(questions):
    counts = Counter(q["id"] for q in questions)
    duplicates = sorted(qid for qid, n in counts.items() if n > 1)
    assert not duplicates, f"duplicate ids: {duplicates}"


def test_unique_questions(questions):
    counts = Counter(q["question"].strip().casefold() for q in questions)
    duplicates = sorted(text for text, n in counts.items() if n > 1)
    assert not duplicates, f"duplicate questions: {duplicates}"


def test_counts(questions):
    assert len(questions) >= MIN_QUESTIONS, f"only {len(questions)} questions"
    per_type = Counter(q["type"] for q in questions)
    for qtype, minimum in MIN_PER_TYPE.items():
        assert per_type[qtype] >= minimum, f"only {per_type[qtype]} {qtype} questions"


def test_distractors(questions):
    errors = []
    for q in questions:
        qid = q["id"]
        distractors = q["distractors"]
        if not isinstance(distractors, list) or len(distractors) != 3:
            errors.append(f"{qid}: needs exactly 3 distractors")
            continue
        if not all(isinstance(d, str) and d.strip() for d in distractors):
            errors.append(f"{qid}: distractors must be non-empty strings")
            continue
        folded = [d.strip().casefold() for d in distractors]
        if len(set(folded)) != 3:
            errors.append(f"{qid}: distractors are not distinct")
        accepted = {a.strip().casefold() for a in q["aliases"]}
        if q["answer"] is not None:
            accepted.add(q["answer"].strip().casefold())
        clashes = accepted.intersection(folded)
        if clashes:
            errors.append(f"{qid}: distractor equals answer/alias {sorted(clashes)}")
    assert not errors, report(errors)


def test_paraphrases(questions):
    errors = []
    for q in questions:
        qid = q["id"]
        paraphrases = q["paraphrases"]
        if not isinstance(paraphrases, list) or len(paraphrases) < 3:
            errors.append(f"{qid}: needs at least 3 paraphrases")
            continue
        if not all(isinstance(p, str) and p.strip() for p in paraphrases):
            errors.append(f"{qid}: paraphrases must be non-empty strings")
            continue
        if len({p.strip().casefold() for p in paraphrases}) != len(paraphrases):
            errors.append(f"{qid}: paraphrases repeat each other")
        question = q["question"].strip().rstrip("?").strip()
        for p in paraphrases:
            if contains(p, question):
                errors.append(f"{qid}: paraphrase copies the question: {p!r}")
    assert not errors, report(errors)


# ---------------------------------------------------------------------------
# QA set: grounding in the knowledge base
# ---------------------------------------------------------------------------


def test_sources_exist(questions, articles):
    errors = []
    for q in questions:
        qid = q["id"]
        for src in q["source"]:
            article = src["article"]
            if article not in articles:
                errors.append(f"{qid}: unknown article {article!r}")
            elif src["section"] not in sub_headings(articles[article]):
                errors.append(f"{qid}: {article} has no ##/### heading {src['section']!r}")
        if q["type"] == "multi-hop" and len(q["source"]) < 2:
            errors.append(f"{qid}: multi-hop questions need at least 2 sources")
        if q["type"] != "multi-hop" and len(q["source"]) != 1:
            errors.append(f"{qid}: {q['type']} questions need exactly 1 source")
    assert not errors, report(errors)


def test_answers_appear_in_source_sections(questions, sections):
    errors = []
    for q in questions:
        if q["type"] in ("unanswerable", "updated"):
            continue
        text = source_text(q, sections)
        candidates = [q["answer"], *q["aliases"]]
        if not any(contains(text, c) for c in candidates):
            errors.append(f"{q['id']}: none of {candidates!r} occurs in its source sections")
    assert not errors, report(errors)


def test_updated_questions(questions, updates, sections):
    errors = []
    for q in questions:
        if q["type"] != "updated":
            continue
        qid = q["id"]
        update = q["update"]
        if update not in updates:
            errors.append(f"{qid}: update file {update!r} does not exist")
            continue
        if not contains(updates[update], q["answer"]):
            errors.append(f"{qid}: answer {q['answer']!r} not found in {update}")
        before = q["answer_before"]
        if not isinstance(before, str) or not before.strip():
            errors.append(f"{qid}: answer_before must be a non-empty string")
            continue
        if before.strip().casefold() == q["answer"].strip().casefold():
            errors.append(f"{qid}: answer_before equals the updated answer")
        if not contains(source_text(q, sections), before):
            errors.append(f"{qid}: answer_before {before!r} not found in its source sections")
        superseded = set(superseded_files(updates[update]))
        if not superseded.intersection(src["article"] for src in q["source"]):
            errors.append(f"{qid}: sources do not include the article {update} supersedes")
    assert not errors, report(errors)


# ---------------------------------------------------------------------------
# QA set: realistic variants
# ---------------------------------------------------------------------------


def test_contains_words_matches_whole_words_only():
    assert contains_words("is it 28 days?", "28 days")
    assert contains_words("Dog fare: £3.00 each way?", "£3")
    assert contains_words("meet in the gulls nest, or the Gull's Nest?", "Gull's Nest")
    assert contains_words("ASK THE PURSER", "purser")
    assert not contains_words("valid for 280 days", "28 days")
    assert not contains_words("do the pursers sell tickets", "purser")
    assert not contains_words("how many dogs", "")


def test_variant_checks_catch_planted_problems():
    def question(**changes):
        base = {
            "id": "x1",
            "question": "How long is a Return ticket valid for?",
            "answer": "28 days",
            "aliases": ["four weeks"],
            "type": "single-hop",
            "variants": [
                "how long does a return last",
                "retrun ticket how lnog",
                "return validity",
                "Off to see my aunt for a while - how long can I use the way back?",
            ],
        }
        base.update(changes)
        return base

    good = question()
    assert variant_problems([good]) == []

    def planted(reason, *variants, **changes):
        errors = variant_problems([question(variants=list(variants), **changes)])
        return any(reason in error for error in errors)

    others = good["variants"][1:]
    assert planted("gives away '28 days'", "is it valid for 28 days", *others)
    assert planted("gives away 'four weeks'", "Four weeks, right?", *others)
    assert planted("duplicates the x1 question", "how long is a return ticket valid for", *others)
    assert planted("duplicates the x1 variant", "return validity!", *others)
    assert planted("non-empty strings", "  ", *others)
    assert planted("at least 3 variants", *others[:2])
    assert planted(
        "gives away '14 days'", "still 14 days?", *others, type="updated", answer_before="14 days"
    )
    assert not planted("gives away", "still 14 days?", *others, answer_before="14 days")
    clash = question(id="x2", question="Something else?", variants=["Return validity", "b", "c"])
    assert any("duplicates the x1 variant" in e for e in variant_problems([good, clash]))


def test_variants(questions):
    errors = variant_problems(questions)
    assert not errors, report(errors)
