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

Words the index lacks for another reason, synonyms and everyday words ("bike" where the knowledge
base says "bicycle", "kids" for "children", "suitcase" for "luggage"), match nothing in BM25. A
search adds to such a word the index's word closest to it in meaning (:meth:`LexicalIndex.expand`,
by the cosine similarity of their sentence embeddings), when it is at least
:data:`EXPANSION_SIMILARITY`.
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
from typing import Callable, Sequence

from ragft_helpers.config import Settings, get_settings

MANIFEST = "ragft-lexical.json"
WORD_VECTORS = "word-vectors.npy"  # the vocabulary's embeddings, for LexicalIndex.expand
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
MIN_EXPANDED_LENGTH = 3  # "my", "ok", "pm": never expanded
# The least cosine similarity between a query word the index lacks and the index word added for
# it. Chosen on the question variants of the train articles (raft.split_questions), hybrid hit@1:
# 0.799 without expansion, 0.805-0.808 for every threshold from 0.5 to 0.8; 0.7, in the middle,
# also gave BM25 alone its best (0.675 -> 0.688). On the test articles' variants, held out:
# hybrid 0.702 -> 0.712 (benchmarks/bench_expansion.py, results/expansion.md).
EXPANSION_SIMILARITY = 0.7


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
    folder: Path | None = None  # where it is saved: the expansion's word vectors are kept there too

    def __post_init__(self):
        self._known = set(self.words)
        self._position = {id_: i for i, id_ in enumerate(self.ids)}
        self._terms = {term for tokens in tokenize(self.words) for term in tokens} if self.words else set()
        self._neighbours: tuple[list[str], object] | None = None  # expansion candidates, their vectors

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

    def expand(self, query: str, embed: Callable[[list[str]], Sequence[Sequence[float]]],
               min_similarity: float | None = None) -> str:
        """``query`` with, after it, for each of its words whose stem no chunk contains (and not a
        stop word), the index's word most similar in meaning, if its cosine similarity is at least
        ``min_similarity`` (default :data:`EXPANSION_SIMILARITY`; above 1, nothing is added): "can
        i bring my bike" gets "bicycle". ``embed`` maps words to
        normalised vectors (the dense side's embedder); the index's words are embedded on the
        first call, once. Meant for the BM25 side only: the dense side understands "bike"."""
        import numpy as np

        candidates = [word for word in dict.fromkeys(w.lower() for w in _WORD.findall(query))
                      if len(word) >= MIN_EXPANDED_LENGTH]
        unknown = [word for word, tokens in zip(candidates, tokenize(candidates) if candidates else [])
                   if tokens and tokens[0] not in self._terms]
        if not unknown or not self._terms:
            return query
        words, vectors = self._neighbours or self._embed_words(embed)
        if not words:
            return query
        similarity = np.asarray(embed(unknown), dtype=np.float32) @ vectors.T
        least = EXPANSION_SIMILARITY if min_similarity is None else min_similarity
        added = [words[int(row.argmax())] for row in similarity if row.max() >= least]
        return " ".join([query, *dict.fromkeys(added)])

    def _embed_words(self, embed) -> tuple[list[str], object]:
        """The words an expansion may add and their vectors: read from the index's folder, or
        embedded now and saved there (a rebuilt index replaces its folder, and these with it)."""
        import numpy as np

        words = [w for w, tokens in zip(self.words, tokenize(self.words))
                 if tokens and len(w) >= MIN_EXPANDED_LENGTH]
        path = self.folder / WORD_VECTORS if self.folder is not None else None
        try:
            vectors = np.load(path) if path is not None else None
        except (OSError, ValueError):
            vectors = None
        if vectors is None or vectors.shape[0] != len(words):
            vectors = np.asarray(embed(words), dtype=np.float32).reshape(len(words), -1)
            if path is not None and path.parent.is_dir():
                np.save(path, vectors)
        self._neighbours = words, vectors
        return self._neighbours

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
            return cls(manifest["ids"], retriever, manifest["fingerprint"], manifest["words"], folder)
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
    index.folder = folder
    _LOADED[str(folder)] = index
    return index, True


def lexical_index(collection, settings: Settings | None = None) -> LexicalIndex:
    """The up-to-date BM25 index of ``collection`` (see :func:`sync`)."""
    return sync(collection, settings)[0]
