"""The lexical side of retrieval: a BM25 index (``bm25s``, English stemming) beside Chroma.

Chroma's embedded client has no sparse (BM25) index, so this one is built from the collection's
own chunks and kept in step with it: its fingerprint is the set of chunk ids, and chunk ids are
derived from content, so the same ids mean the same texts. :func:`sync` rebuilds it only when the
ids changed; ``store.index_folder`` calls it after every (re)index, and :func:`lexical_index`
checks it before every search. It is saved in ``RAGFT_CACHE_DIR/lexical/<collection id>/``, which
works the same for an embedded index and a ``RAGFT_CHROMA_URL`` server.

Typos are corrected before a search (:meth:`LexicalIndex.correct`) against the index's own
vocabulary, which is rebuilt with it. Words of an English dictionary (the word list of
``symspellpy``, :func:`english_words`) are never corrected: "battery" must not become "bakery" only
because the index happens to lack the word.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from ragft_helpers.config import Settings, get_settings

MANIFEST = "ragft-lexical.json"
FORMAT = 3  # of the saved index; a saved index of another format is rebuilt
# BM25's term-frequency saturation and length normalisation: Anserini's defaults (Lin et al.,
# "Pyserini", SIGIR 2021), chosen among the usual settings (bm25s's k1 = 1.5, b = 0.75; Lucene's
# 1.2 / 0.75; these) on the question variants of the train articles (raft.split_questions);
# every b from 0.3 to 0.6 scored alike there (hybrid hit@1 0.79-0.80), all above b = 0.75. On the
# test articles' variants hybrid hit@1 rose too (0.689 -> 0.702, with query_pieces); on the
# documentation corpus of benchmarks/bench_docs.py hybrid kept its hit@1 (0.887) and BM25 alone
# lost one question (0.661 -> 0.645).
BM25_PARAMETERS = {"k1": 0.9, "b": 0.4}
LANGUAGE = "english"  # the Snowball stemmer and bm25s's stop-word list
_WORD = re.compile(r"[A-Za-z]+")
MIN_CORRECTED_LENGTH = 4  # shorter words are left as typed: too many neighbours one edit away


def fingerprint(ids: Sequence[str]) -> str:
    """A hash of the set of chunk ids: equal sets, equal fingerprint."""
    digest = hashlib.sha256("\n".join(sorted(ids)).encode("utf-8"))
    return digest.hexdigest()[:16]


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased, stop words dropped, Snowball-stemmed word tokens (bm25s's tokenizer)."""
    import bm25s
    import Stemmer

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=Stemmer.Stemmer(LANGUAGE),
                          return_ids=False, show_progress=False)


def vocabulary(texts: Sequence[str]) -> list[str]:
    """The distinct lower-case words of ``texts``, the most frequent first (then alphabetically),
    so that of two corrections equally close the more frequent word wins."""
    counts = Counter(word.lower() for text in texts for word in _WORD.findall(text))
    return sorted(counts, key=lambda word: (-counts[word], word))


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """The 82,765 words of ``symspellpy``'s English frequency dictionary, lower case."""
    from importlib.resources import files

    text = (files("symspellpy") / "frequency_dictionary_en_82_765.txt").read_text(encoding="utf-8")
    return frozenset(line.split(" ", 1)[0] for line in text.splitlines() if line.strip())


@dataclass
class LexicalIndex:
    """BM25 over the chunks ``ids`` (in the index's own order), and their vocabulary."""

    ids: list[str]
    retriever: object  # bm25s.BM25
    fingerprint: str
    words: list[str]

    def __post_init__(self):
        self._known = set(self.words)
        self._position = {id_: i for i, id_ in enumerate(self.ids)}

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str]) -> "LexicalIndex":
        import bm25s

        retriever = bm25s.BM25(**BM25_PARAMETERS)
        if ids:
            retriever.index(tokenize(texts), show_progress=False)
        return cls(list(ids), retriever, fingerprint(ids), vocabulary(texts))

    def correct(self, query: str) -> str:
        """``query`` with each word the index does not know replaced by the closest word it does
        (one edit away, two for words of 7+ letters; a swap of neighbours counts as one edit; of
        equally close words the more frequent in the index), so "retrun tikcet orvanny" finds
        "return ticket orvanay". Words the index knows and English words (:func:`english_words`)
        stay as typed."""
        from rapidfuzz import distance, process

        english = english_words()

        def fix(match):
            word = match.group(0)
            lower = word.lower()
            if (len(lower) < MIN_CORRECTED_LENGTH or lower in self._known or lower in english
                    or not self.words):
                return word
            best = process.extractOne(lower, self.words, scorer=distance.OSA.distance,
                                      score_cutoff=1 if len(lower) < 7 else 2)
            return best[0] if best else word

        return _WORD.sub(fix, query)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, BM25 score) pairs, best first; chunks sharing no term with the
        query are left out."""
        if not self.ids or k <= 0:
            return []
        tokens = tokenize([query])
        if not tokens[0]:
            return []
        indices, scores = self.retriever.retrieve(tokens, k=min(k, len(self.ids)),
                                                  show_progress=False)
        return [(self.ids[int(i)], float(s)) for i, s in zip(indices[0], scores[0]) if s > 0]

    def scores(self, query: str, ids: Sequence[str]) -> dict[str, float]:
        """The BM25 score of ``query`` for each chunk of ``ids`` (0 for a chunk sharing no term
        with it, or not in the index)."""
        tokens = tokenize([query])[0]
        if not self.ids or not tokens:
            return {id_: 0.0 for id_ in ids}
        every = self.retriever.get_scores(tokens)
        return {id_: float(every[self._position[id_]]) if id_ in self._position else 0.0
                for id_ in ids}

    def save(self, folder: Path) -> None:
        staging = folder.with_name(folder.name + ".saving")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if self.ids:
            self.retriever.save(str(staging), show_progress=False)
        (staging / MANIFEST).write_text(json.dumps({"format": FORMAT, "fingerprint": self.fingerprint,
                                                    "ids": self.ids, "words": self.words}),
                                        encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)

    @classmethod
    def load(cls, folder: Path) -> "LexicalIndex | None":
        """The index saved in ``folder``, or ``None`` when there is none (or it is unreadable, or
        of another :data:`FORMAT`)."""
        import bm25s

        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT:
                return None
            retriever = (bm25s.BM25.load(str(folder), show_progress=False, verbosity=0)
                         if manifest["ids"] else bm25s.BM25(**BM25_PARAMETERS))
            return cls(manifest["ids"], retriever, manifest["fingerprint"], manifest["words"])
        except (OSError, ValueError, KeyError):
            return None


_LOADED: dict[str, LexicalIndex] = {}  # folder -> the index in memory


def lexical_dir(collection, settings: Settings | None = None) -> Path:
    """``RAGFT_CACHE_DIR/lexical/<collection id>``: a re-created collection gets a new folder."""
    return (settings or get_settings()).cache_dir / "lexical" / str(collection.id)


def _current(collection) -> tuple[list[str], str]:
    ids = collection.get(include=[])["ids"]
    return ids, fingerprint(ids)


def sync(collection, settings: Settings | None = None) -> tuple[LexicalIndex, bool]:
    """The BM25 index of ``collection``, rebuilt (and saved) only when its chunks changed.

    Returns the index and whether it was rebuilt.
    """
    folder = lexical_dir(collection, settings)
    ids, current = _current(collection)
    index = _LOADED.get(str(folder))
    if index is None or index.fingerprint != current:
        index = LexicalIndex.load(folder)
    if index is not None and index.fingerprint == current:
        _LOADED[str(folder)] = index
        return index, False
    documents = collection.get(ids=ids, include=["documents"]) if ids else {"ids": [], "documents": []}
    index = LexicalIndex.build(documents["ids"], documents["documents"])
    index.save(folder)
    _LOADED[str(folder)] = index
    return index, True


def lexical_index(collection, settings: Settings | None = None) -> LexicalIndex:
    """The up-to-date BM25 index of ``collection`` (see :func:`sync`)."""
    return sync(collection, settings)[0]
