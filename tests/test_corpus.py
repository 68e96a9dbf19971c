"""Loading documents and chunking them: boundaries, budgets, offsets, ids."""
from pathlib import Path

import pytest

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import corpus, wikitext
from ragft_helpers.corpus import Document, chunk_document, chunk_documents, load_documents, word_count

ROOT = Path(__file__).resolve().parents[1]

SENTENCES = [f"Sentence number {n} talks about the ferry to island {n} and its timetable." for n in range(40)]

MARKDOWN = """# Harbour Guide

The harbour opens at six. Boats leave hourly.

## Fares

Adults pay four pounds. Children pay two pounds.

### Discounts

Students get a third off.

```
# not a heading: a comment inside a code block
```

## Timetable

""" + " ".join(SENTENCES[:20]) + "\n\n" + " ".join(SENTENCES[20:]) + "\n"


def _doc(text: str, source: str = "guide.md") -> Document:
    return Document(Path("/kb") / source, corpus.document_title(text, Path(source)), text, source, "kb")


def _body_matches_offsets(doc: Document, chunks) -> None:
    for chunk in chunks:
        start, end = chunk.metadata["start_char"], chunk.metadata["end_char"]
        assert doc.text[start:end] == chunk.body
        assert chunk.text == chunk.metadata["heading_path"] + "\n" + chunk.body


def test_chunks_follow_markdown_headings_and_skip_code_fences():
    doc = _doc(MARKDOWN)
    chunks = chunk_document(doc, max_tokens=60, overlap=10)
    paths = [c.metadata["heading_path"] for c in chunks]
    assert paths[:3] == ["Harbour Guide", "Harbour Guide > Fares", "Harbour Guide > Fares > Discounts"]
    assert set(paths[3:]) == {"Harbour Guide > Timetable"}
    assert "# not a heading" in chunks[2].body
    fares = chunks[1]
    assert fares.body == "Adults pay four pounds. Children pay two pounds."
    assert [c.metadata["chunk_index"] for c in chunks] == list(range(len(chunks)))
    assert {c.metadata["title"] for c in chunks} == {"Harbour Guide"}
    _body_matches_offsets(doc, chunks)


def test_wikitext_headings_split_articles_and_sections():
    text = (" \n = Oxbow lake = \n \n An oxbow lake is a lake . It is curved . \n \n"
            " = = Formation = = \n \n Rivers meander . \n \n = = = Rate = = = \n \n It varies . \n"
            " \n = River delta = \n \n A delta is a landform . \n")
    doc = _doc(text, "wiki.train.raw")
    assert doc.title == "Oxbow lake"
    chunks = chunk_document(doc)
    assert [c.metadata["heading_path"] for c in chunks] == [
        "Oxbow lake", "Oxbow lake > Formation", "Oxbow lake > Formation > Rate", "River delta"]
    assert chunks[1].body == "Rivers meander ."
    _body_matches_offsets(doc, chunks)


def test_token_budget_is_respected_and_chunks_end_at_sentences():
    doc = _doc(MARKDOWN)
    for max_tokens, overlap in [(40, 0), (60, 15), (120, 30)]:
        chunks = chunk_document(doc, max_tokens=max_tokens, overlap=overlap)
        assert all(word_count(c.text) <= max_tokens for c in chunks)
        assert all(c.body.endswith(".") for c in chunks if "Discounts" not in c.metadata["heading_path"])


def test_a_custom_token_counter_sets_the_budget():
    def characters(text: str) -> int:
        return len(text)

    chunks = chunk_document(_doc(MARKDOWN), max_tokens=300, overlap=80, count_tokens=characters)
    assert all(len(c.text) <= 300 for c in chunks)
    assert len(chunks) > len(chunk_document(_doc(MARKDOWN), max_tokens=300, overlap=80))


def test_consecutive_chunks_overlap_by_whole_sentences():
    doc = _doc(MARKDOWN)
    chunks = [c for c in chunk_document(doc, max_tokens=60, overlap=15)
              if c.metadata["heading_path"].endswith("Timetable")]
    assert len(chunks) >= 4
    overlapping = 0
    for previous, current in zip(chunks, chunks[1:]):
        p_end, c_start = previous.metadata["end_char"], current.metadata["start_char"]
        if c_start < p_end:
            overlapping += 1
            shared = doc.text[c_start:p_end]
            assert previous.body.endswith(shared) and current.body.startswith(shared)
            assert word_count(shared) <= 15 and shared.startswith("Sentence")
    assert overlapping >= len(chunks) - 2  # paragraph ends may cut without overlap
    without = chunk_document(doc, max_tokens=60, overlap=0)
    timetable = [c for c in without if c.metadata["heading_path"].endswith("Timetable")]
    assert all(b.metadata["start_char"] > a.metadata["end_char"] for a, b in zip(timetable, timetable[1:]))


def test_a_sentence_longer_than_the_budget_is_cut_into_words():
    doc = _doc("# T\n\n" + " ".join(["word"] * 50) + ".\n")
    chunks = chunk_document(doc, max_tokens=12, overlap=0)
    assert all(word_count(c.text) <= 12 for c in chunks)
    assert sum(word_count(c.body) for c in chunks) == 50
    _body_matches_offsets(doc, chunks)


def test_ids_are_stable_content_derived_and_distinct_for_duplicates():
    doc = _doc(MARKDOWN)
    first = chunk_document(doc, max_tokens=60, overlap=10)
    assert [c.id for c in first] == [c.id for c in chunk_document(doc, max_tokens=60, overlap=10)]
    edited = _doc(MARKDOWN.replace("Students get a third off.", "Students get half off."))
    second = chunk_document(edited, max_tokens=60, overlap=10)
    changed = {c.id for c in first} ^ {c.id for c in second}
    assert len(changed) == 2  # the Discounts chunk, old and new; the rest keep their ids
    twice = _doc("# T\n\n## Same\n\nIdentical text.\n\n## Same\n\nIdentical text.\n")
    duplicates = chunk_document(twice)
    assert duplicates[0].text == duplicates[1].text
    assert duplicates[0].id != duplicates[1].id
    assert len(chunk_document(_doc(MARKDOWN, "other.md"))[0].id) == 16
    assert chunk_document(_doc(MARKDOWN, "other.md"))[0].id != first[0].id


def test_bad_chunking_options_are_rejected():
    with pytest.raises(ValueError, match="overlap"):
        chunk_document(_doc(MARKDOWN), max_tokens=20, overlap=20)


def test_whole_knowledge_base_chunks_have_exact_offsets():
    for folder in ("knowledge", "knowledge_updates", "wikitext-fallback"):
        docs = load_documents(ROOT / "data" / folder)
        chunks = chunk_documents(docs)
        by_source = {doc.source: doc for doc in docs}
        for chunk in chunks:
            doc = by_source[chunk.metadata["source"]]
            assert doc.text[chunk.metadata["start_char"]:chunk.metadata["end_char"]] == chunk.body
            assert word_count(chunk.text) <= 200
        assert len({c.id for c in chunks}) == len(chunks)


def test_load_documents_is_recursive_sorted_and_finds_titles(tmp_path):
    (tmp_path / "b.md").write_text("Intro line.\n\n# Real Title\n\nText.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.raw").write_text(" \n = Wiki Title = \n \n Text . \n")
    (tmp_path / "a.txt").write_text("No heading at all.\r\nSecond line.\r\n")
    (tmp_path / "notes.csv").write_text("ignored,file\n")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "b-checkpoint.md").write_text("# Copy\n")
    with pytest.warns(UserWarning, match="Not indexed") as record:
        docs = load_documents(tmp_path)
    assert [d.source for d in docs] == ["a.txt", "b.md", "sub/a.raw"]
    assert len(record) == 1 and "notes.csv" in str(record[0].message)  # the hidden copy is not named
    assert "checkpoint" not in str(record[0].message)
    assert [d.title for d in docs] == ["a", "Real Title", "Wiki Title"]
    assert docs[0].text == "No heading at all.\nSecond line.\n"
    assert {d.folder for d in docs} == {tmp_path.name}


def test_binary_and_non_utf8_files_are_skipped_with_one_warning(tmp_path):
    (tmp_path / "good.md").write_text("# Good\n\nFine.\n")
    (tmp_path / "image.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.warns(UserWarning) as record:
        docs = load_documents(tmp_path)
    assert [d.source for d in docs] == ["good.md"]
    assert len(record) == 1
    message = str(record[0].message)
    assert "image.md" in message and "latin1.txt" in message


def test_files_of_other_kinds_and_empty_files_are_named_in_warnings(tmp_path):
    (tmp_path / "Guide.MD").write_text("# Guide\n\nThe cafe opens at 07:45.\n")
    (tmp_path / "wifi.html").write_text("<h1>Wifi</h1><p>Free wifi on board.</p>")
    (tmp_path / "timetable.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "empty.md").write_text("  \n\n")
    with pytest.warns(UserWarning) as record:
        docs = load_documents(tmp_path)
    assert [d.source for d in docs] == ["Guide.MD"]  # read in any case
    messages = [str(r.message) for r in record]
    assert len(messages) == 2
    other, empty = messages
    assert "wifi.html" in other and "timetable.pdf" in other and ".md" in other and ".txt" in other
    assert "empty.md" in empty and "empty" in empty
    for n in range(12):  # a folder full of other files: the warning names ten and counts the rest
        (tmp_path / f"photo{n:02}.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "empty.md").unlink()
    with pytest.warns(UserWarning, match="Not indexed: 14 file") as record:
        load_documents(tmp_path)
    assert len(record) == 1
    assert "photo00.jpg" in str(record[0].message) and "and 4 more" in str(record[0].message)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError) as info:
        load_documents(tmp_path)
    assert str(tmp_path) in str(info.value) and ".md" in str(info.value) and ".raw" in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_documents(tmp_path / "missing")


def test_corpus_re_exports_the_wikitext_loader():
    for name in ("load_wikitext", "undo_escapes", "split_articles", "detokenize", "heading_level",
                 "article_title", "load_raw_folder", "WikiTextError"):
        assert getattr(corpus, name) is getattr(wikitext, name)
        assert name in corpus.__all__


# ---- plain text and reStructuredText -------------------------------------------------------------

REST = """=================
 Harbour Handbook
=================

The handbook covers the harbour.

Fares
=====

Adults pay four pounds.

Discounts
---------

Students get a third off.

Season tickets
~~~~~~~~~~~~~~

A season ticket costs ninety pounds.

Timetable
=========

Boats leave hourly.

----------

Short
===

Not a title: the underline is shorter than the line.
"""


def test_rest_titles_are_headings_with_levels_in_order_of_appearance():
    doc = _doc(REST, "handbook.rst")
    assert doc.title == "Harbour Handbook"  # the overlined title
    chunks = chunk_document(doc)
    assert [c.metadata["heading_path"] for c in chunks] == [
        "Harbour Handbook",
        "Harbour Handbook > Fares",
        "Harbour Handbook > Fares > Discounts",
        "Harbour Handbook > Fares > Discounts > Season tickets",
        "Harbour Handbook > Timetable",
    ]
    assert chunks[0].body == "The handbook covers the harbour."
    assert chunks[2].text == "Harbour Handbook > Fares > Discounts\nStudents get a third off."
    # a transition line and a too-short underline are text, not headings
    assert "----------" in chunks[-1].body and "Short\n===" in chunks[-1].body
    assert all("=====" not in c.body and "~~~~" not in c.body for c in chunks[:-1])
    _body_matches_offsets(doc, chunks)


def test_an_overlined_title_differs_from_an_underlined_one_of_the_same_character():
    text = "=====\nGuide\n=====\n\nIntro.\n\nPart one\n========\n\nBody one.\n\nPart two\n========\n\nBody two.\n"
    chunks = chunk_document(_doc(text, "guide.txt"))
    assert [c.metadata["heading_path"] for c in chunks] == [
        "Guide", "Guide > Part one", "Guide > Part two"]
    assert [c.body for c in chunks] == ["Intro.", "Body one.", "Body two."]


def test_an_indented_block_stays_whole_and_with_its_introduction():
    code = ("   def fare(age):\n       if age < 16:\n           return 2.0\n\n"
            "       # adults. Students. Everyone else.\n       return 4.0\n")
    text = ("Fares\n=====\n\n" + " ".join(SENTENCES[:6]) + "\n\nThe fare is computed like this:\n\n"
            + code + "\nThat is all.\n")
    doc = _doc(text, "fares.txt")
    for max_tokens in (60, 80, 120):
        chunks = chunk_document(doc, max_tokens=max_tokens, overlap=10)
        holding = [c for c in chunks if "def fare(age):" in c.body]
        assert len(holding) == 1, max_tokens
        assert code.strip() in holding[0].body
        assert "The fare is computed like this:\n\n   def fare" in holding[0].body
        assert not any("return 4.0" in c.body for c in chunks if c is not holding[0])
        assert all(word_count(c.text) <= max_tokens for c in chunks)
        _body_matches_offsets(doc, chunks)
    # Markdown keeps its own rules: the same text in a .md file is cut inside the block
    markdown = chunk_document(_doc(text, "fares.md"), max_tokens=20, overlap=0)
    assert sum("return" in c.body for c in markdown) >= 1


def test_an_indented_block_over_the_budget_is_cut_like_other_text():
    block = "\n".join(f"   Step {n} of the long procedure is here." for n in range(40))
    doc = _doc("Intro:\n\n" + block + "\n", "steps.txt")
    chunks = chunk_document(doc, max_tokens=50, overlap=0)
    assert len(chunks) > 4
    assert all(word_count(c.text) <= 50 for c in chunks)
    _body_matches_offsets(doc, chunks)


def test_a_headingless_text_file_uses_its_file_name_as_title(tmp_path):
    (tmp_path / "ferry-rules.txt").write_text(
        "Dogs travel free.\n\nBikes cost one pound.\n\n    Indented note.\n")
    (tmp_path / "guide.rst").write_text(REST)
    docs = load_documents(tmp_path)
    assert [(d.source, d.title) for d in docs] == [
        ("ferry-rules.txt", "ferry-rules"), ("guide.rst", "Harbour Handbook")]
    chunks = chunk_document(docs[0])
    assert [c.text for c in chunks] == [
        "ferry-rules\nDogs travel free.\n\nBikes cost one pound.\n\n    Indented note."]
    assert {c.metadata["title"] for c in chunks} == {"ferry-rules"}
    assert "*.rst" in corpus.DEFAULT_PATTERNS
    assert corpus.is_plain_text("a.rst") and corpus.is_plain_text("notes")
    assert not corpus.is_plain_text("a.md") and not corpus.is_plain_text("wiki.train.raw")


def test_underlined_titles_are_not_headings_in_markdown():
    text = "# Guide\n\nIntro.\n\nFares\n=====\n\nFour pounds.\n"
    chunks = chunk_document(_doc(text, "guide.md"))
    assert [c.metadata["heading_path"] for c in chunks] == ["Guide"]
    assert "Fares\n=====" in chunks[0].body


NOTICE = """# New Dog Fares

Effective: 2025-06-01
Supersedes: pets.md, fares.md

From 1 June 2025 the dog fare rises from £2.50 to £3.00.
"""


def test_a_notice_s_date_and_superseded_files_are_chunk_metadata():
    chunks = chunk_document(_doc(NOTICE, "2025-06-01-dogs.md"))
    assert chunks and all(c.metadata["notice"] is True and c.metadata["effective"] == "2025-06-01"
                          and c.metadata["supersedes"] == "pets.md, fares.md" for c in chunks)
    assert corpus.superseded_sources(chunks[0].metadata) == ["pets.md", "fares.md"]
    assert "Effective: 2025-06-01" in chunks[0].body  # the date stays in the text the reader sees
    ordinary = chunk_document(_doc(MARKDOWN))
    assert not any(set(corpus.NOTICE_FIELDS) & set(c.metadata) for c in ordinary)
    assert corpus.superseded_sources(ordinary[0].metadata) == []


def test_notice_fields_need_both_lines_and_a_real_date():
    assert corpus.notice_fields(NOTICE) == {"notice": True, "effective": "2025-06-01",
                                            "supersedes": "pets.md, fares.md"}
    # the fields must come first: a date later in the prose is not a notice
    assert corpus.notice_fields("# T\n\nDogs pay more.\n\nEffective: 2025-06-01\nSupersedes: a.md\n") == {}
    for broken in ("# T\n\nEffective: 2025-13-01\nSupersedes: a.md\n", "# T\n\nEffective: 2025-06-01\n",
                   "# T\n\nSupersedes: a.md\n"):
        with pytest.warns(UserWarning, match="needs both 'Effective: YYYY-MM-DD' and 'Supersedes"):
            assert corpus.notice_fields(broken, "x.md") == {}


def test_the_knowledge_updates_are_all_notices_of_existing_articles():
    articles = {d.source for d in load_documents(ROOT / "data" / "knowledge")}
    for doc in load_documents(ROOT / "data" / "knowledge_updates"):
        fields = corpus.notice_fields(doc.text, doc.source)
        assert fields["effective"] == doc.source[:10]  # the file name starts with the date
        assert set(corpus.superseded_sources(fields)) <= articles
