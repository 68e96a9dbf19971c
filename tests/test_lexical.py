"""The lexical side of retrieval: typo correction against the index's vocabulary, kept in step with
the index, and the BM25 scores hybrid retrieval fuses."""
import json

import pytest

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import lexical, retrieval, store
from tests.index_folders import indexed_folder, settings  # noqa: F401 (fixture)

FILES = {
    "bikes.md": "# Bicycles\n\n## Carrying bicycles\n\nBicycles travel free on the car deck. "
                "Folding bicycles may come into the saloon.\n",
    "bakery.md": "# Onboard Bakery\n\n## Bread\n\nOur bread comes from the Harbour Bakery in "
                 "Kettlebay, baked every morning.\n",
    "seating.md": "# Seating\n\n## Lounge\n\nThe lounge has 40 seats; reserved seats and window "
                  "seats are marked. Meets the accessibility code.\n",
}





@pytest.fixture
def indexed(settings, tmp_path):
    return indexed_folder(settings, tmp_path / "kb", FILES)


def top_source(question, collection, settings, method):
    return retrieval.retrieve(question, 1, collection, settings=settings, method=method)[0].metadata["source"]


def test_a_misspelt_question_finds_what_its_correct_spelling_finds(indexed, settings):
    collection, _ = indexed
    for method in ("bm25", "hybrid"):
        right = top_source("where do folding bicycles go", collection, settings, method)
        assert right == "bikes.md"
        assert top_source("where do foldng bicyles go", collection, settings, method) == right
        assert top_source("which bakrey bakes the bread", collection, settings, method) == "bakery.md"


def test_english_words_the_index_lacks_are_not_corrected(indexed, settings):
    index = lexical.lexical_index(indexed[0], settings)
    assert "battery" not in index.words and "bakery" in index.words
    # "battery" is two edits from "bakery": without the English dictionary it became "bakery"
    assert index.correct("How do I carry my e-bike battery?") == "How do I carry my e-bike battery?"
    assert index.correct("my partner told me") == "my partner told me"
    assert index.correct("the bakrey in kettelbay") == "the bakery in kettlebay"
    assert {"battery", "partner", "bakery"} <= lexical.english_words()


def test_of_equally_close_words_the_more_frequent_in_the_index_wins(indexed, settings):
    index = lexical.lexical_index(indexed[0], settings)
    # "seets" is one edit from "seats" (3 times in the index) and from "meets" (once)
    assert index.words.index("seats") < index.words.index("meets")
    assert index.correct("how many seets") == "how many seats"


def test_the_vocabulary_follows_the_index_through_add_update_and_remove(indexed, settings):
    collection, folder = indexed
    index = lexical.lexical_index(collection, settings)
    assert index.correct("porrige") == "porrige"  # no such word yet: left as typed
    (folder / "cafe.md").write_text("# Cafe\n\n## Breakfast\n\nThe cafe serves porridge.\n",
                                    encoding="utf-8")
    assert store.index_folder(folder, collection, progress=False, settings=settings).lexical_rebuilt
    index = lexical.lexical_index(collection, settings)
    assert index.correct("porrige") == "porridge"  # added
    assert top_source("porrige for breakfast", collection, settings, "hybrid") == "cafe.md"
    (folder / "cafe.md").write_text("# Cafe\n\n## Breakfast\n\nThe cafe serves kippers.\n",
                                    encoding="utf-8")
    store.index_folder(folder, collection, progress=False, settings=settings)
    index = lexical.lexical_index(collection, settings)
    assert "porridge" not in index.words and index.correct("kipers") == "kippers"  # updated
    (folder / "cafe.md").unlink()
    store.index_folder(folder, collection, progress=False, settings=settings)
    index = lexical.lexical_index(collection, settings)
    assert "kippers" not in index.words and index.correct("kipers") == "kipers"  # removed
    # what a new process loads is the same vocabulary
    saved = lexical.LexicalIndex.load(lexical.lexical_dir(collection, settings))
    assert saved is not None and saved.words == index.words


def test_a_saved_index_of_an_older_format_is_rebuilt(indexed, settings):
    collection, _ = indexed
    folder = lexical.lexical_dir(collection, settings)
    manifest = json.loads((folder / lexical.MANIFEST).read_text(encoding="utf-8"))
    assert manifest["format"] == lexical.FORMAT
    del manifest["format"]  # as saved before the format was recorded (alphabetical vocabulary)
    (folder / lexical.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    lexical._LOADED.clear()
    assert lexical.LexicalIndex.load(folder) is None
    index, rebuilt = lexical.sync(collection, settings)
    assert rebuilt and index.words == lexical.vocabulary(collection.get()["documents"])


def test_scores_are_the_bm25_scores_search_ranks_by(indexed, settings):
    index = lexical.lexical_index(indexed[0], settings)
    found = index.search("bread from the bakery", 3)
    scores = index.scores("bread from the bakery", index.ids + ["not-indexed"])
    for id_, score in found:
        assert scores[id_] == pytest.approx(score)
    assert {id_ for id_, score in scores.items() if score > 0} == {id_ for id_, _ in found}
    assert scores["not-indexed"] == 0.0
    assert set(index.scores("the and of", index.ids).values()) == {0.0}  # stop words only
