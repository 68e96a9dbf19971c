"""Retrieval: the chunks of the index most relevant to a question, best first — by embedding
(dense), by words (BM25) or both fused (hybrid).

Notices (:func:`ragft_helpers.corpus.notice_fields`: a document with ``Effective:`` and
``Supersedes:`` lines) apply from their date on (:func:`retrieval_date`). In the default mode,
"rewrite", the ranking is the same as without them; a returned notice in force is marked
(``supersedes``) and each returned chunk of a file it supersedes carries the changes the notice
states for the values it contains (``changes``: "rises from £12.40 to £13.10" gives ("£12.40",
"£13.10"), :func:`notice_changes`), so that the prompt shows the notice first and the old text with
the new values (:mod:`ragft_helpers.rag`). Only the values a notice changes, in the files it names,
are touched. Modes "demote" and "article" rank what a notice supersedes below it instead
(:func:`apply_notices`); ``benchmarks/bench_freshness.py`` measures each against "none".
"""
from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Sequence

from ragft_helpers.config import SUPERSEDE_MODES, Settings, get_settings, in_force, retrieval_date
from ragft_helpers.corpus import superseded_sources
from ragft_helpers.fusion import convex_fusion
from ragft_helpers.lexical import lexical_index
from ragft_helpers.store import embed_queries, open_collection, require_index

METHODS = ("dense", "bm25", "hybrid")
# A control, not a retriever: k chunks drawn at random (seeded by the question and the settings'
# seed), to measure what answers are worth when retrieval brings nothing relevant.
RANDOM = "random"
DEFAULT_METHOD = "hybrid"  # the best of the three on realistically phrased questions (notebook 03)
CANDIDATES = 20  # chunks each side contributes to a hybrid fusion
# A sentence of a question long enough to be searched on its own by hybrid retrieval (words).
MIN_PIECE_WORDS = 3
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
RRF_C = 60  # reciprocal-rank fusion's constant (Cormack et al. 2009)
# A value: an amount, a time, a percentage, a count or a range of them (£12.40, 07:00–20:00, 15%).
VALUE = r"[£$€]?\d+(?:[.,:]\d+)*(?:\s?[–-]\s?\d+(?:[.,:]\d+)*)?%?"
_VALUE = re.compile(VALUE)
# How a notice states a change: "rises from £12.40 to £13.10" (a change verb, then from OLD to NEW;
# "open from 08:00 to 18:00", a range, has no change verb) and "06:45 instead of 07:00".
_CHANGE_VERB = (r"(?:rise[sn]?|rose|increase[sd]?|decrease[sd]?|fall(?:s|en)?|fell|drop(?:s|ped)?"
                r"|move[sd]?|change[sd]?|go(?:es)? (?:up|down)|went (?:up|down)|(?:is|are|was|were"
                r"|has been|have been|will be) (?:cut|reduced|raised|increased|extended|shortened"
                r"|changed|moved))")
_FROM_TO = re.compile(rf"\b({_CHANGE_VERB}) from ({VALUE})((?: [a-z]+)?) to (?=({VALUE}))",
                      re.IGNORECASE)
_INSTEAD_OF = re.compile(rf",?[ \t]+instead of (?=[^,.;:\n]*?({VALUE}))[^,.;\n]*", re.IGNORECASE)
_UNIT = re.compile(r"(?: [a-z]+){1,2}(?=[ ,.;:)]|$)")  # the words after a count: "working days"
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+|\n)")
# "the relief vessel MV Gannet Reach was renamed MV Merriven Light"
_NAME = r"[A-Z][\w'’-]*(?: [A-Z][\w'’-]*)*"
_RENAMED = re.compile(rf"({_NAME}) (?:was|is|has been|will be) renamed (?:as |to )?({_NAME})")
# A sentence about the state before the change: "Previously, a full refund was given ...".
_BEFORE = re.compile(r"(?:(?<=^)|(?<=[.!?][ \t])|(?<=\n))(?:Previously|Formerly|Until now|Until then"
                     r"|In the past|Before this change),?[ \t][^.!?\n]*(?:[.!?]+|$)[ \t]*", re.MULTILINE)


@dataclass(frozen=True)
class RetrievedChunk:
    id: str
    text: str  # as indexed: the heading path, a newline, then the body
    metadata: dict = field(hash=False)
    score: float  # cosine similarity to the question, 1 - cosine distance
    # The files this chunk supersedes on the retrieval date: a notice in force; () for any other
    # chunk, and for a notice not yet in force.
    supersedes: tuple[str, ...] = ()
    # (old, new) values that notices in force change in this chunk, in mode "rewrite"
    # (:func:`notice_changes`); the prompt shows the chunk with the new values.
    changes: tuple[tuple[str, str], ...] = ()

    @property
    def body(self) -> str:
        heading = self.metadata.get("heading_path", "")
        return self.text[len(heading) + 1:] if self.text.startswith(heading + "\n") else self.text

    @property
    def label(self) -> str:
        """``source > heading path``, e.g. ``tern-card.md > Tern Card > Cost``."""
        return f"{self.metadata.get('source', '?')} > {self.metadata.get('heading_path', '')}"

    @property
    def is_notice(self) -> bool:
        """A chunk of a notice (in force or not)."""
        return bool(self.metadata.get("notice"))


def check_question(question: str) -> str:
    if not isinstance(question, str) or not question.strip():
        raise ValueError("The question is empty: type a question about the knowledge base, "
                         "e.g. 'How much does the Tern Card cost?'.")
    return question.strip()


def values(text: str) -> set[str]:
    """The values (amounts, times, percentages, counts) written in ``text``."""
    return set(_VALUE.findall(text))


def replaced_values(text: str) -> set[str]:
    """The old values of the changes a notice states: ``{"£12.40"}`` for "the fare rises from
    £12.40 to £13.10", ``{"07:00"}`` for "leaves at 06:45 instead of 07:00", and the values of a
    sentence about the state before the change ("Previously, a full refund was given 48 hours
    before departure.") that the rest of the notice does not state."""
    old = {match.group(2) for match in _FROM_TO.finditer(text)}
    for match in _INSTEAD_OF.finditer(text):
        old |= values(match.group(0))
    before = set().union(*(values(match.group(0)) for match in _BEFORE.finditer(text)))
    return old | (before - values(new_values_only(text)))


def new_values_only(text: str) -> str:
    """``text`` with each change it states reduced to the new value: "rises from £12.40 to
    £13.10" becomes "rises to £13.10", "leaves at 06:45 instead of 07:00, so" becomes "leaves at
    06:45, so", and sentences about the state before the change ("Previously, ...") are left
    out. Other text is left as it is."""
    return _BEFORE.sub("", _INSTEAD_OF.sub("", _FROM_TO.sub(r"\1 to ", text)))


def _with_unit(value: str, after: str) -> str:
    """A bare count with the words that follow it ("10" + " working days of" -> "10 working
    days"); any other value as it is."""
    if re.fullmatch(r"\d+", value):
        unit = _UNIT.match(after)
        return value + unit.group(0) if unit else value
    return value


def _specific(old: str) -> bool:
    """An old value that cannot be mistaken for another number: it has a unit, a currency, a
    percent sign, a time's colon or a decimal point (a bare "2" could be anything)."""
    return bool(re.search(r"[^\d]", old))


def notice_changes(text: str) -> list[tuple[str, str]]:
    """(old, new) pairs of the changes a notice states, in order: "the fare rises from £12.40 to
    £13.10" gives ("£12.40", "£13.10"); "from 2 dogs to 3 dogs" ("2 dogs", "3 dogs"); "within 7
    working days, instead of the previous 10 working days" ("10 working days", "7 working days");
    "MV Gannet Reach was renamed MV Merriven Light" ("Gannet Reach", "Merriven Light"). A change
    without an old value that names one thing only (a bare count) is left out."""
    pairs = []
    for match in _FROM_TO.finditer(text):
        old, unit, new = match.group(2), match.group(3), match.group(4)
        after_new = text[match.end() + len(new):]
        pairs.append((old + unit, new + unit) if unit and after_new.startswith(unit) else (old, new))
    for match in _INSTEAD_OF.finditer(text):
        clause = match.group(0)
        found = _VALUE.search(clause)
        start = max((m.end() for m in _SENTENCE_START.finditer(text, 0, match.start())), default=0)
        before = list(_VALUE.finditer(text, start, match.start()))
        if not found or not before:
            continue
        old = _with_unit(found.group(0), clause[found.end():])
        new = _with_unit(before[-1].group(0), text[before[-1].end():match.start()] + " ")
        if old != found.group(0) and new == before[-1].group(0):
            new += old[len(found.group(0)):]  # "7 ... instead of 10 working days": the same unit
        pairs.append((old, new))
    for match in _RENAMED.finditer(text):
        old, new = match.group(1).split(), match.group(2).split()
        while len(old) > 1 and len(new) > 1 and old[0] == new[0]:  # "MV Gannet Reach", "MV Merriven Light"
            old, new = old[1:], new[1:]
        pairs.append((" ".join(old), " ".join(new)))
    return [(old, new) for old, new in pairs if old != new and _specific(old)]


def _occurrence(old: str) -> re.Pattern:
    return re.compile(rf"(?<![\w.,:£$€–-]){re.escape(old)}(?![\w%:–-]|[.,]\d)")


def apply_changes(text: str, changes: Sequence[tuple[str, str]]) -> str:
    """``text`` with each old value of ``changes`` (:func:`notice_changes`) replaced by its new
    value, where it stands as a whole value ("£12.40", not "£112.40" or "£12.405")."""
    for old, new in changes:
        text = _occurrence(old).sub(new, text)
    return text


def changes_in(text: str, changes: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The ``changes`` that apply to ``text``, in order: those whose old value it states once the
    earlier ones are applied (a value changed twice ends at the later new value)."""
    found = []
    for old, new in changes:
        pattern = _occurrence(old)
        if pattern.search(text):
            found.append((old, new))
            text = pattern.sub(new, text)
    return tuple(found)


def _body(text: str, metadata: dict) -> str:
    heading = metadata.get("heading_path", "")
    return text[len(heading) + 1:] if text.startswith(heading + "\n") else text


def _notice_text(text: str, metadata: dict) -> str:
    """A notice chunk's prose: its body without the ``Key: value`` lines."""
    lines = _body(text, metadata).splitlines()
    while lines and (not lines[0].strip() or re.match(r"^[A-Za-z][A-Za-z -]*:", lines[0])):
        lines.pop(0)
    return "\n".join(lines)


def apply_notices(ranked: Sequence[tuple[str, str, dict]], notices: Sequence[tuple[str, str, dict]],
                  day: date, mode: str = "demote") -> list[str]:
    """The ids of ``ranked`` (id, text, metadata) rows, best first, reordered for the notices in
    force on ``day`` (:func:`in_force`) that are among them; ``notices`` are all the notice
    chunks of the index. A chunk a notice changes is a chunk of a file its ``supersedes`` names
    (matched on ``source``) that states an old value the notice replaces (:func:`replaced_values`).

    ``mode`` "demote": the notice moves up to the place of the best-ranked chunk it changes, and
    the chunks it changes rank below every other candidate (keeping their order); the rest of the
    article keeps its rank. "article": the notice moves up to the place of the article's
    best-ranked chunk, and every chunk of the article ranks below every other candidate. "none"
    and "rewrite" (which changes the text shown, not the ranking: :func:`retrieve`) move nothing.
    Notices not yet in force, and files no notice in force names, are left as ranked.
    """
    if mode not in SUPERSEDE_MODES:
        raise ValueError(f"Unknown supersede mode {mode!r}; use one of: {', '.join(SUPERSEDE_MODES)}.")
    order = [row[0] for row in ranked]
    if mode in ("none", "rewrite"):
        return order
    candidates = set(order)
    active = [row for row in notices if row[0] in candidates and in_force(row[2], day)]
    by_article: dict[str, list[str]] = {}
    old: dict[str, set[str]] = {}
    for id_, text, metadata in sorted(active, key=lambda row: order.index(row[0])):
        old[id_] = replaced_values(_notice_text(text, metadata))
        for source in superseded_sources(metadata):
            by_article.setdefault(source, []).append(id_)
    placed: set[str] = set()
    kept, below = [], []
    for id_, text, metadata in ranked:
        if id_ in placed:
            continue
        superseding = [] if metadata.get("notice") else by_article.get(metadata.get("source"), [])
        if superseding and mode == "demote":
            stated = values(_body(text, metadata))
            superseding = [notice for notice in superseding if old[notice] & stated]
        for notice in superseding:
            if notice not in placed:
                kept.append(notice)
                placed.add(notice)
        if superseding:
            below.append(id_)
        else:
            kept.append(id_)
            placed.add(id_)
    return kept + below


def changes_by_source(notices: Sequence[tuple[str, str, dict]], day: date) -> dict[str, list[tuple[str, str]]]:
    """For each file a notice in force on ``day`` supersedes, the (old, new) changes those notices
    state (:func:`notice_changes`), oldest notice first (a later change of the same value wins)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for id_, text, metadata in sorted(notices, key=lambda row: str(row[2].get("effective", ""))):
        if in_force(metadata, day):
            for source in superseded_sources(metadata):
                found.setdefault(source, []).extend(notice_changes(_notice_text(text, metadata)))
    return found


def _notices(collection) -> list[tuple[str, str, dict]]:
    """Every notice chunk of the index: (id, text, metadata)."""
    result = collection.get(where={"notice": True}, include=["documents", "metadatas"])
    return list(zip(result["ids"], result["documents"], result["metadatas"]))


def query_pieces(question: str) -> list[str]:
    """What hybrid retrieval embeds for ``question``: the question, then each of its sentences
    of :data:`MIN_PIECE_WORDS` words or more when it has two or more. A long message ("we're
    travelling with my mum next week, she uses a wheelchair. can she stay in the car?") mixes its
    question with context that pulls a single embedding away from it; each chunk is scored by the
    piece it is most similar to."""
    sentences = [s.strip() for s in _SENTENCE_END.split(question) if len(s.split()) >= MIN_PIECE_WORDS]
    return [question, *sentences] if len(sentences) > 1 else [question]


def _dense(collection, embeddings: list[list[float]], n: int) -> list[tuple[str, str, dict, float]]:
    """The ``n`` chunks most similar to any of ``embeddings``, each with its highest similarity,
    best first (each embedding's ``n`` nearest are the candidates; with one embedding, Chroma's
    answer as it is)."""
    result = collection.query(query_embeddings=embeddings, n_results=n,
                              include=["documents", "metadatas", "distances"])
    best: dict[str, tuple[str, str, dict, float]] = {}
    for ids, texts, metadatas, distances in zip(result["ids"], result["documents"],
                                                result["metadatas"], result["distances"]):
        for id_, text, metadata, distance in zip(ids, texts, metadatas, distances):
            if id_ not in best or 1.0 - distance > best[id_][3]:
                best[id_] = (id_, text, metadata, 1.0 - distance)
    return sorted(best.values(), key=lambda row: -row[3])[:n]


def _fetch(collection, ids: list[str], embeddings: list[list[float]]) -> dict[str, tuple[str, str, dict, float]]:
    """Chunks by id with their highest cosine similarity to ``embeddings`` (the stored vectors
    are unit)."""
    import numpy as np

    if not ids:
        return {}
    result = collection.get(ids=ids, include=["documents", "metadatas", "embeddings"])
    queries = np.asarray(embeddings, dtype=np.float32)
    return {id_: (id_, text, metadata, float((queries @ np.asarray(vector, dtype=np.float32)).max()))
            for id_, text, metadata, vector in zip(result["ids"], result["documents"],
                                                   result["metadatas"], result["embeddings"])}


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], c: int = RRF_C) -> list[tuple[str, float]]:
    """Ids ordered by the sum over ``rankings`` of ``1 / (c + rank)`` (rank from 1), best first;
    ties keep the order of first appearance. It looks at ranks only; hybrid retrieval fuses scores
    instead (:func:`ragft_helpers.fusion.convex_fusion`), which finds the right section first more
    often on realistically phrased questions."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, id_ in enumerate(ranking, start=1):
            fused[id_] = fused.get(id_, 0.0) + 1.0 / (c + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def warm_up(collection, *, settings: Settings | None = None, method: str = DEFAULT_METHOD) -> float:
    """Load what a first retrieval loads (the embedding model, the lexical index, the word list for
    typos) by retrieving once, and return the seconds it took: a program that answers questions
    calls it at start-up, so each question's reported retrieval time is its own."""
    start = time.perf_counter()
    retrieve("warm-up", 1, collection, settings=settings, method=method)
    return time.perf_counter() - start


def retrieve(question: str, k: int = 4, collection=None, *, settings: Settings | None = None,
             method: str = DEFAULT_METHOD, as_of: date | str | None = None,
             supersede: str | None = None) -> list[RetrievedChunk]:
    """The ``k`` chunks most relevant to ``question``, best first.

    ``method``: "dense" (Chroma's nearest embeddings), "bm25" (the lexical index beside it,
    :mod:`ragft_helpers.lexical`), "hybrid" (the :data:`CANDIDATES` best chunks of each,
    ranked by a weighted sum of their normalised dense and BM25 scores,
    :func:`ragft_helpers.fusion.convex_fusion`), or the control "random" (:data:`RANDOM`: any
    ``k`` chunks, the same for the same question and seed). BM25 and hybrid first correct words the index
    does not know (typos) to the closest words it does (:meth:`LexicalIndex.correct`); the dense
    side of hybrid scores each chunk by the most similar of the question and its sentences
    (:func:`query_pieces`). Every chunk's ``score`` is that cosine similarity to the (corrected)
    question, whatever ranked it, so one threshold means about the same for every method.

    Notices (``supersede``, default the settings' ``supersede``, ``RAGFT_SUPERSEDE``; judged on
    ``as_of``, default :func:`retrieval_date`): a returned notice in force names the files it
    supersedes in ``supersedes``. In mode "rewrite" the ranking is the same as without notices,
    and each returned chunk of a superseded file lists in ``changes`` the (old, new) values the
    notices in force change in it (:func:`changes_by_source`); the prompt shows the notice first
    and the chunk with the new values (:mod:`ragft_helpers.rag`). Modes "demote" and "article"
    rerank the candidates instead (:func:`apply_notices`; dense retrieval then looks
    :data:`CANDIDATES` chunks deep too). Mode "none" treats notices as ordinary chunks.
    """
    question = check_question(question)
    if method not in (*METHODS, RANDOM):
        raise ValueError(f"Unknown retrieval method {method!r}; use one of: {', '.join(METHODS)} "
                         f"(or {RANDOM!r}, the control).")
    mode = supersede or (settings or get_settings()).supersede
    if mode not in SUPERSEDE_MODES:
        raise ValueError(f"Unknown supersede mode {mode!r}; use one of: {', '.join(SUPERSEDE_MODES)}.")
    collection = collection if collection is not None else open_collection(settings)
    count = require_index(collection)
    if k <= 0:
        return []
    bm25 = lexical_index(collection, settings) if method in ("bm25", "hybrid") else None
    query = bm25.correct(question) if bm25 is not None else question
    embeddings = embed_queries(query_pieces(query) if method == "hybrid" else [query])
    notices = _notices(collection) if mode != "none" else []
    day = retrieval_date(settings, as_of) if notices else None
    reorder = bool(notices) and mode in ("demote", "article")
    depth = min(count, k if method == "dense" and not reorder else max(k, CANDIDATES))
    dense = _dense(collection, embeddings, depth) if method in ("dense", "hybrid") else []
    found = {row[0]: row for row in dense}
    if method == RANDOM:
        seed = (settings or get_settings()).seed
        ranked = random.Random(f"{seed}|{question}").sample(sorted(collection.get(include=[])["ids"]),
                                                           min(k, count))
    elif bm25 is None:
        ranked = list(found)
    else:
        lexical_ids = [id_ for id_, _ in bm25.search(query, depth)]
        if method == "bm25":
            ranked = lexical_ids
        else:  # each candidate of either side with both of its scores
            found.update(_fetch(collection, [id_ for id_ in lexical_ids if id_ not in found], embeddings))
            candidates = list(dict.fromkeys([*(row[0] for row in dense), *lexical_ids]))
            lexical_scores = bm25.scores(query, candidates)
            ranked = [id_ for id_, _ in convex_fusion(
                {id_: (found[id_][3], lexical_scores[id_]) for id_ in candidates})]
    if reorder:
        ranked = ranked[:depth]
        found.update(_fetch(collection, [id_ for id_ in ranked if id_ not in found], embeddings))
        ranked = apply_notices([found[id_][:3] for id_ in ranked], notices, day, mode)
    ranked = ranked[:k]
    found.update(_fetch(collection, [id_ for id_ in ranked if id_ not in found], embeddings))
    changes = changes_by_source(notices, day) if mode == "rewrite" and notices else {}
    chunks = []
    for id_ in ranked:
        _, text, metadata, score = found[id_]
        notice = day is not None and in_force(metadata, day)
        chunks.append(RetrievedChunk(
            id_, text, metadata, score,
            supersedes=tuple(superseded_sources(metadata)) if notice else (),
            changes=() if metadata.get("notice") else changes_in(
                text, changes.get(metadata.get("source"), []))))
    return chunks
