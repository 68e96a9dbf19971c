"""Dense, BM25 and hybrid retrieval, and the BM25 index kept in step with the Chroma collection."""
import pytest

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import lexical, retrieval, store
from ragft_helpers.config import get_settings

# Dense and lexical disagree on purpose: "QX-7 form" is a rare code only BM25 matches exactly,
# while the meaning of the question is closest to the refunds text.
FILES = {
    "refunds.md": "# Refunds\n\n## Getting your money back\n\nIf a sailing is cancelled you are "
                  "paid back in full to the card you used.\n",
    "forms.md": "# Forms\n\n## Paperwork\n\nClaims are made on the QX-7 form at any ticket office.\n",
    "cafe.md": "# Cafe\n\n## Food\n\nThe cafe sells soup, sandwiches and hot drinks on every crossing.\n",
}


def _write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def settings(tmp_path):
    return get_settings({"RAGFT_CACHE_DIR": str(tmp_path / "cache"), "RAGFT_PROFILE": "smoke"})


@pytest.fixture
def indexed(settings, tmp_path):
    collection = store.open_collection(settings)
    folder = _write(tmp_path / "kb", FILES)
    store.index_folder(folder, collection, progress=False, settings=settings)
    return collection, folder


def sources(chunks):
    return [c.metadata["source"] for c in chunks]


def test_reciprocal_rank_fusion_rewards_agreement():
    fused = retrieval.reciprocal_rank_fusion([["a", "b", "c"], ["b", "d", "e"]])
    assert [id_ for id_, _ in fused] == ["b", "a", "d", "c", "e"]  # in both lists beats 1st in one
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_bm25_finds_the_rare_exact_term_and_hybrid_keeps_both_signals(indexed, settings):
    collection, _ = indexed
    assert sources(retrieval.retrieve("QX-7 form", 1, collection, settings=settings, method="bm25")) == ["forms.md"]
    question = "which QX-7 paperwork gets my money back?"
    hybrid = sources(retrieval.retrieve(question, 2, collection, settings=settings, method="hybrid"))
    assert set(hybrid) == {"forms.md", "refunds.md"}
    dense = retrieval.retrieve(question, 3, collection, settings=settings, method="dense")
    for method in ("bm25", "hybrid"):  # scores stay cosine similarities, whatever ranked the chunk
        for chunk in retrieval.retrieve(question, 3, collection, settings=settings, method=method):
            same = [c for c in dense if c.id == chunk.id]
            assert not same or chunk.score == pytest.approx(same[0].score, abs=1e-5)


def test_typos_are_corrected_to_words_the_index_knows(indexed, settings):
    collection, _ = indexed
    index = lexical.lexical_index(collection, settings)
    assert index.correct("the cafe sells suop and sandwhiches") == "the cafe sells soup and sandwiches"
    assert index.correct("Cancelled SAILING") == "Cancelled SAILING"  # known words stay as typed
    top = retrieval.retrieve("sandwhiches on the crosing", 1, collection, settings=settings, method="bm25")
    assert sources(top) == ["cafe.md"]


def test_an_unknown_method_is_refused_naming_the_choices(indexed, settings):
    with pytest.raises(ValueError, match="dense, bm25, hybrid"):
        retrieval.retrieve("soup?", 1, indexed[0], settings=settings, method="sparse")


def test_the_bm25_index_follows_every_add_update_and_removal(indexed, settings, tmp_path):
    collection, folder = indexed
    again = store.index_folder(folder, collection, progress=False, settings=settings)
    assert again.embedded == 0 and not again.lexical_rebuilt  # nothing changed, nothing rebuilt
    (folder / "cafe.md").write_text("# Cafe\n\n## Food\n\nThe cafe now sells porridge.\n", encoding="utf-8")
    (folder / "lockers.md").write_text("# Lockers\n\n## Luggage\n\nLockers take one suitcase.\n",
                                       encoding="utf-8")
    (folder / "forms.md").unlink()
    report = store.index_folder(folder, collection, progress=False, settings=settings)
    assert report.lexical_rebuilt and report.removed and report.added and report.updated
    index = lexical.lexical_index(collection, settings)
    assert set(index.ids) == set(collection.get(include=[])["ids"])
    found = lambda q: sources(retrieval.retrieve(q, 3, collection, settings=settings, method="bm25"))
    assert found("porridge") == ["cafe.md"] and found("suitcase lockers")[0] == "lockers.md"
    assert "forms.md" not in found("QX-7 form claims") and found("soup") == []
    # a new process finds the saved index and rebuilds nothing
    saved = lexical.LexicalIndex.load(lexical.lexical_dir(collection, settings))
    assert saved is not None and saved.fingerprint == index.fingerprint
    store.remove_folder(folder.name, collection, settings=settings)
    assert lexical.lexical_index(collection, settings).ids == []


def test_a_stale_saved_index_is_rebuilt_not_trusted(indexed, settings):
    collection, _ = indexed
    folder = lexical.lexical_dir(collection, settings)
    lexical.LexicalIndex.build(["made-up"], ["nothing to do with ferries"]).save(folder)
    lexical._LOADED.clear()
    index, rebuilt = lexical.sync(collection, settings)
    assert rebuilt and set(index.ids) == set(collection.get(include=[])["ids"])
