"""Dense, BM25 and hybrid retrieval, and the BM25 index kept in step with the Chroma collection."""
from datetime import date

import pytest

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import lexical, rag, retrieval, store
from ragft_helpers.config import get_settings
from tests.index_folders import indexed_folder, settings, write_files as _write  # noqa: F401 (fixture)

# Dense and lexical disagree on purpose: "QX-7 form" is a rare code only BM25 matches exactly,
# while the meaning of the question is closest to the refunds text.
FILES = {
    "refunds.md": "# Refunds\n\n## Getting your money back\n\nIf a sailing is cancelled you are "
                  "paid back in full to the card you used.\n",
    "forms.md": "# Forms\n\n## Paperwork\n\nClaims are made on the QX-7 form at any ticket office.\n",
    "cafe.md": "# Cafe\n\n## Food\n\nThe cafe sells soup, sandwiches and hot drinks on every crossing.\n",
}





@pytest.fixture
def indexed(settings, tmp_path):
    return indexed_folder(settings, tmp_path / "kb", FILES)


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


def test_a_long_message_is_searched_by_its_sentences_too(indexed, settings):
    message = ("We are taking the kids to their grandparents for the weekend and packing soup, "
               "sandwiches and hot drinks for the trip. If the sailing is cancelled, do we get the "
               "money back to the card?")
    pieces = retrieval.query_pieces(message)
    assert pieces[0] == message and len(pieces) == 3 and pieces[2].startswith("If the sailing")
    assert retrieval.query_pieces("dog fare orvanay?") == ["dog fare orvanay?"]
    assert retrieval.query_pieces("Hi. Is the cafe open?") == ["Hi. Is the cafe open?"]  # "Hi." is too short
    collection, _ = indexed
    # each chunk's hybrid score is its highest cosine similarity to the message or a sentence of it
    best = {}
    for piece in pieces:
        for chunk in retrieval.retrieve(piece, 3, collection, settings=settings, method="dense"):
            best[chunk.id] = max(best.get(chunk.id, -1.0), chunk.score)
    hybrid = retrieval.retrieve(message, 3, collection, settings=settings, method="hybrid")
    assert [c.score for c in hybrid] == pytest.approx([best[c.id] for c in hybrid], abs=1e-5)
    assert sources(hybrid)[0] == "refunds.md"  # the question, not the picnic


def test_the_random_control_draws_k_chunks_the_same_way_for_the_same_question(indexed, settings):
    collection = indexed[0]
    drawn = {question: [c.id for c in retrieval.retrieve(question, 2, collection, settings=settings,
                                                         method="random")]
             for question in ("How do I get a refund?", "Is there soup?", "Where is the QX-7 form?")}
    assert all(len(ids) == 2 and len(set(ids)) == 2 for ids in drawn.values())
    again = [c.id for c in retrieval.retrieve("How do I get a refund?", 2, collection,
                                              settings=settings, method="random")]
    assert again == drawn["How do I get a refund?"]
    assert len({tuple(ids) for ids in drawn.values()}) > 1  # not one fixed pair for every question
    chunk = retrieval.retrieve("How do I get a refund?", 1, collection, settings=settings, method="random")[0]
    assert -1 <= chunk.score <= 1  # its real similarity to the question, as for every method


def test_an_unknown_method_is_refused_naming_the_choices(indexed, settings):
    with pytest.raises(ValueError, match="dense, bm25, hybrid.*random"):
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


# ---- notices: a notice in force outranks the part of the article it supersedes -----------------

KB = {
    "fares.md": "# Fares\n\n## Adult Fares\n\nAn adult single ticket on the Orvanay Crossing costs "
                "£12.40.\n\n## Ten-Journey Carnets\n\nA carnet of ten adult singles on the Orvanay "
                "Crossing costs £99.00 and is valid for a year.\n",
    "pets.md": "# Pets\n\n## Dog Fares\n\nThe dog fare is £2.50 per dog for each single journey.\n",
    "concessions.md": "# Concessions\n\n## Fares by Route\n\nThe adult single on the Orvanay "
                      "Crossing is £12.40; a child single costs £6.20.\n",
}
UPDATES = {
    "2025-03-01-new-fares.md": "# New Fares\n\nEffective: 2025-03-01\nSupersedes: fares.md\n\n"
                               "The adult single fare on the Orvanay Crossing rises from £12.40 to "
                               "£13.10. Carnet prices are unchanged.\n",
    "2030-01-01-dog-fares.md": "# Dog Fares in 2030\n\nEffective: 2030-01-01\nSupersedes: pets.md\n\n"
                               "The dog fare rises from £2.50 to £3.00 per dog for each single journey.\n",
}
ADULT = "How much is an adult single fare on the Orvanay Crossing?"


@pytest.fixture(scope="module")
def with_notices(tmp_path_factory):
    root = tmp_path_factory.mktemp("notices")
    settings = get_settings({"RAGFT_CACHE_DIR": str(root / "cache"), "RAGFT_PROFILE": "smoke"})
    collection = store.open_collection(settings)
    for folder, files in (("kb", KB), ("updates", UPDATES)):
        store.index_folder(_write(root / folder, files), collection, progress=False, settings=settings)
    return collection, settings


def labels(chunks):
    return [c.label for c in chunks]


def test_notice_changes_are_read_as_old_and_new_values():
    text = ("The fare rises from £12.40 to £13.10 and the limit increases from 2 dogs to 3 dogs. "
            "The first boat leaves at 06:45 instead of 07:00, so it arrives at 08:00. Refunds take "
            "7 working days, instead of the previous 10 working days. The office is open from "
            "08:00 to 18:00 and the carnet is unchanged at £99.00. MV Gannet Reach was renamed "
            "MV Merriven Light.")
    assert retrieval.notice_changes(text) == [
        ("£12.40", "£13.10"), ("2 dogs", "3 dogs"), ("07:00", "06:45"),
        ("10 working days", "7 working days"), ("Gannet Reach", "Merriven Light")]
    assert retrieval.replaced_values(text) == {"£12.40", "2", "07:00", "10"}
    assert retrieval.new_values_only(text) == (
        "The fare rises to £13.10 and the limit increases to 3 dogs. The first boat leaves at 06:45, "
        "so it arrives at 08:00. Refunds take 7 working days. The office is open from 08:00 to 18:00 "
        "and the carnet is unchanged at £99.00. MV Gannet Reach was renamed MV Merriven Light.")
    # a range ("from 08:00 to 18:00") and an unchanged value are not changes; a sentence about
    # the old rules is left out, its values count as replaced unless the notice states them again
    before = "Previously, refunds took 48 hours. Now they take 24 hours. Previously the fee was £5."
    assert retrieval.new_values_only(before) == "Now they take 24 hours. "
    assert retrieval.replaced_values(before) == {"48", "£5"}
    table = "| Orvanay | £12.40 | £112.40 | £12.405 |\nIt costs £12.40."
    assert retrieval.apply_changes(table, [("£12.40", "£13.10")]) == (
        "| Orvanay | £13.10 | £112.40 | £12.405 |\nIt costs £13.10.")  # whole values only


def test_apply_notices_demotes_only_the_changed_part():
    notice = ("n", "New\nEffective: 2025-03-01\nSupersedes: a.md\n\nThe fare rises from £1.00 to £2.00.",
              {"notice": True, "effective": "2025-03-01", "supersedes": "a.md", "heading_path": "New"})
    old = ("a1", "A > Fare\nThe fare is £1.00.", {"source": "a.md", "heading_path": "A > Fare"})
    rest = ("a2", "A > Rules\nDogs on a lead.", {"source": "a.md", "heading_path": "A > Rules"})
    other = ("b", "B\nThe fare is £1.00.", {"source": "b.md", "heading_path": "B"})
    ranked = [rest, old, other, notice]
    march, february = date(2025, 3, 1), date(2025, 2, 28)
    assert retrieval.apply_notices(ranked, [notice], march, "demote") == ["a2", "n", "b", "a1"]
    assert retrieval.apply_notices(ranked, [notice], march, "article") == ["n", "b", "a2", "a1"]
    for mode in ("none", "rewrite"):
        assert retrieval.apply_notices(ranked, [notice], march, mode) == ["a2", "a1", "b", "n"]
    assert retrieval.apply_notices(ranked, [notice], february, "demote") == ["a2", "a1", "b", "n"]
    assert retrieval.apply_notices(ranked[:3], [notice], march, "demote") == ["a2", "a1", "b"]
    with pytest.raises(ValueError, match="none, rewrite, demote, article"):
        retrieval.apply_notices(ranked, [notice], march, "drop")


def test_a_notice_in_force_rewrites_the_part_of_the_article_it_changes(with_notices):
    collection, settings = with_notices
    unfixed = retrieval.retrieve(ADULT, 10, collection, settings=settings, supersede="none")
    fixed = retrieval.retrieve(ADULT, 10, collection, settings=settings, as_of="2026-01-01")
    assert labels(fixed) == labels(unfixed)  # the ranking is left as it is
    by_label = {c.label: c for c in fixed}
    assert by_label["2025-03-01-new-fares.md > New Fares"].supersedes == ("fares.md",)
    assert by_label["fares.md > Fares > Adult Fares"].changes == (("£12.40", "£13.10"),)
    assert by_label["fares.md > Fares > Ten-Journey Carnets"].changes == ()  # not changed
    context = rag.format_context(fixed[:3])
    assert "£13.10" in context and "costs £12.40" not in context.split("concessions.md")[0]
    assert context.index("[1] (2025-03-01-new-fares.md > New Fares)\nEffective: 2025-03-01") >= 0
    assert not any(c.supersedes or c.changes for c in unfixed)


def test_in_demote_mode_a_changed_chunk_ranks_below_the_notice(with_notices):
    collection, settings = with_notices
    unfixed = labels(retrieval.retrieve(ADULT, 5, collection, settings=settings, supersede="none"))
    assert unfixed.index("fares.md > Fares > Adult Fares") < unfixed.index("2025-03-01-new-fares.md > New Fares")
    for method in ("hybrid", "dense", "bm25"):
        fixed = retrieval.retrieve(ADULT, 10, collection, settings=settings, method=method,
                                   as_of="2026-01-01", supersede="demote")
        assert fixed[0].label == "2025-03-01-new-fares.md > New Fares" and fixed[0].is_notice
        assert labels(fixed)[-1] == "fares.md > Fares > Adult Fares"  # below every other chunk
    assert "fares.md > Fares > Adult Fares" not in labels(retrieval.retrieve(
        ADULT, 2, collection, settings=settings, as_of="2026-01-01", supersede="demote"))


def test_a_notice_before_its_effective_date_supersedes_nothing(with_notices):
    collection, settings = with_notices
    for mode in ("rewrite", "demote"):
        unfixed = labels(retrieval.retrieve(ADULT, 5, collection, settings=settings, supersede="none"))
        early = retrieval.retrieve(ADULT, 5, collection, settings=settings, as_of="2025-02-28",
                                   supersede=mode)
        assert labels(early) == unfixed and not any(c.supersedes or c.changes for c in early)
    dogs = "What is the dog fare for a single journey?"
    future = retrieval.retrieve(dogs, 5, collection, settings=settings)  # today, before 2030
    assert future[0].label == "pets.md > Pets > Dog Fares" and future[0].changes == ()
    assert [c.supersedes for c in future if c.metadata["source"].startswith("2030")] == [()]
    assert "£2.50" in rag.format_context(future)
    later = retrieval.retrieve(dogs, 5, collection, settings=settings, as_of="2030-01-01")
    assert {c.label: c for c in later}["pets.md > Pets > Dog Fares"].changes == (("£2.50", "£3.00"),)
    # the settings' date (RAGFT_AS_OF) is the default
    in_2030 = get_settings({"RAGFT_CACHE_DIR": str(settings.cache_dir), "RAGFT_PROFILE": "smoke",
                            "RAGFT_AS_OF": "2030-06-30"})
    assert retrieval.retrieve(dogs, 5, collection, settings=in_2030) == later


def test_an_article_no_notice_names_is_untouched(with_notices):
    collection, settings = with_notices
    concessions = "concessions.md > Concessions > Fares by Route"
    for mode in ("rewrite", "demote", "article"):
        unfixed = labels(retrieval.retrieve(ADULT, 5, collection, settings=settings, supersede="none"))
        fixed = retrieval.retrieve(ADULT, 5, collection, settings=settings, as_of="2026-01-01",
                                   supersede=mode)
        # concessions.md states the old fare too, but no notice names it: no change, not moved down
        assert labels(fixed).index(concessions) <= unfixed.index(concessions) + 1
        chunk = {c.label: c for c in fixed}[concessions]
        assert chunk.changes == () and "£12.40" in rag.format_context([chunk])
    carnet = "How much is a ten-journey carnet on the Orvanay Crossing?"
    for mode in ("rewrite", "demote"):
        top = labels(retrieval.retrieve(carnet, 3, collection, settings=settings, as_of="2026-01-01",
                                        supersede=mode))
        assert top[0] == "fares.md > Fares > Ten-Journey Carnets"  # the unchanged section stays first


def test_the_chunk_size_sweep_retrieves_with_the_settings_it_is_given(indexed, settings, monkeypatch):
    from ragft_helpers import corpus, retrieval_metrics
    from ragft_helpers.qa import Question

    _, folder = indexed
    questions = [Question("s1", "How are claims made?", "QX-7 form", (), ("a", "b", "c"),
                          (("forms.md", "Paperwork"),), "single-hop", ())]
    given = settings.with_budgets(rag_k=2)
    seen = []

    def spy(*args, settings=None, **kwargs):
        seen.append(settings)
        return retrieval.retrieve(*args, settings=settings, **kwargs)

    monkeypatch.setattr(retrieval_metrics, "retrieve", spy)
    retrieval_metrics.chunk_size_sweep(corpus.load_documents(folder), questions, (20,), settings=given)
    assert seen and all(s is given for s in seen)


def test_the_method_comparison_and_the_chunk_size_sweep_are_reloaded_until_an_input_changes(
        indexed, settings, tmp_path, monkeypatch):
    from ragft_helpers import corpus, retrieval_metrics
    from ragft_helpers.qa import Question

    collection, folder = indexed
    questions = [Question("r1", "How are claims made?", "QX-7 form", ("claims form?",), ("a", "b", "c"),
                          (("forms.md", "Paperwork"),), "single-hop", ())]
    documents = corpus.load_documents(folder)
    comparison, ranks = retrieval_metrics.method_comparison(questions, collection, settings=settings)
    sweep = retrieval_metrics.chunk_size_sweep(documents, questions, (20, 60), settings=settings)
    assert set(comparison["method"]) == set(retrieval.METHODS) and list(sweep["chunk size (words)"]) == [20, 60]

    def measured_again(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(retrieval_metrics, "_method_comparison", measured_again)
    monkeypatch.setattr(retrieval_metrics, "_chunk_size_sweep", measured_again)
    again, _ = retrieval_metrics.method_comparison(questions, collection, settings=settings)
    assert again.equals(comparison)
    assert retrieval_metrics.chunk_size_sweep(documents, questions, (20, 60), settings=settings).equals(sweep)
    edited = [documents[0].__class__(**{**vars(documents[0]), "text": documents[0].text + " More."}),
              *documents[1:]]
    for run in (lambda: retrieval_metrics.method_comparison(questions, collection, ks=(1, 2), settings=settings),
                lambda: retrieval_metrics.chunk_size_sweep(edited, questions, (20, 60), settings=settings),
                lambda: retrieval_metrics.chunk_size_sweep(documents, questions, (20, 60), overlap=0,
                                                           settings=settings)):
        with pytest.raises(AssertionError, match="measured again"):
            run()
