"""The evaluation harness: multiple-choice scoring, bootstrap intervals, results on disk, the
side-by-side handler."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import harness, results, score_cache, scoring, store, viz, widgets
from ragft_helpers.config import get_settings
from ragft_helpers.qa import Question
from tests.tiny_models import one_torch_thread, tiny_gpt2, tiny_llama, tiny_tokenizer  # noqa: F401

SENTENCE = "the ferry leaves the harbour at seven and returns at nine ."


def _model(tokenizer, seed=0):
    return tiny_gpt2(tokenizer, seed=seed, n_positions=256)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def trained(tokenizer):
    """A tiny model that has memorised SENTENCE."""
    model = _model(tokenizer)
    ids = tokenizer(SENTENCE, return_tensors="pt").input_ids
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return get_settings({"RAGFT_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
                         "RAGFT_PROFILE": "smoke"})


def _q(id_="q1", type_="single-hop", answer="seven", question="the ferry leaves the harbour at"):
    return Question(id_, question, answer, (), ("nine", "four", "two"), (("a.md", "A"),), type_, ())


def test_choose_option_picks_what_the_model_learned(trained, tokenizer):
    index, scores = scoring.choose_option(trained, tokenizer, "the ferry leaves the harbour at",
                                           ["four", "seven", "two", "nine"])
    assert index == 1 and len(scores) == 4


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_options_scored_on_a_read_prompt_score_as_choose_option(tokenizer, make):
    model = make(tokenizer, seed=3, initializer_range=0.5).eval()
    prompt = "the ferry leaves the harbour at"
    options = ["seven", "nine in the morning", "two", "the island has a school"]
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        cache = model(torch.tensor([ids[:-1]]), use_cache=True).cache
    length = cache.get_seq_length()
    index, scores = scoring.choose_after(model, tokenizer, cache, ids[-1],
                                         scoring.option_ids(tokenizer, prompt, options))
    expected_index, expected = scoring.choose_option(model, tokenizer, prompt, options)
    assert index == expected_index and scores == pytest.approx(expected, abs=1e-4)
    assert len(set(round(x, 3) for x in scores)) == len(options)  # the options really differ
    assert cache.get_seq_length() == length  # the reading is left as it was, for generation


def test_scores_are_mean_log_probs_per_option_token(trained, tokenizer):
    prompt = "the ferry leaves"
    prompt_ids = tokenizer(prompt).input_ids
    # options of several tokens and of one; then only one-token options (no second pass)
    for options in (["the harbour at seven", "at", "the island has a school"], ["at", "the"]):
        _, scores = scoring.choose_option(trained, tokenizer, prompt, options)
        for option, score in zip(options, scores):
            option_ids = tokenizer(" " + option).input_ids
            with torch.no_grad():
                logprobs = trained(torch.tensor([prompt_ids + option_ids])).logits[0].log_softmax(-1)
            total = sum(logprobs[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(option_ids))
            assert score == pytest.approx(total / len(option_ids), abs=1e-4)


def test_length_normalisation_does_not_favour_short_options(trained, tokenizer):
    """Summed log-probs would prefer one unlikely word; the mean prefers the learned phrase."""
    options = ["school", "seven and returns at nine"]
    index, _ = scoring.choose_option(trained, tokenizer, "the ferry leaves the harbour at", options)
    assert index == 1


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_batched_multiple_choice_matches_one_question_at_a_time(make, trained, tokenizer):
    words = SENTENCE.split()
    items = [("the ferry leaves the harbour at", ["four", "seven", "two pounds", "nine"]),
             ("the", ["ferry leaves", "island", "a ticket costs four pounds"]),
             (" ".join(words[2:9]), ["at nine", "returns"]),  # two options only
             ("a ticket costs", ["four pounds for adults", "two", "the", "nine ."]),
             ("the island has a lighthouse , a school and", ["a small market", "at seven"])]
    for model in (trained, make(tokenizer, seed=3, initializer_range=0.5).eval()):
        alone = [scoring.choose_option(model, tokenizer, prompt, options) for prompt, options in items]
        # groups of two prompts; groups of up to 12 padded tokens (the longest prompt alone)
        for batching in ({"batch_size": 2}, {"batch_size": 8, "batch_tokens": 12}):
            batched = scoring.choose_options(model, tokenizer, items, **batching)
            assert [index for index, _ in batched] == [index for index, _ in alone]
            for (_, got), (_, expected) in zip(batched, alone):
                assert got == pytest.approx(expected, abs=1e-4)


def test_option_order_is_a_seeded_permutation():
    first = scoring.option_order(4, 42, "q1")
    assert sorted(first) == [0, 1, 2, 3] and first == scoring.option_order(4, 42, "q1")
    orders = {tuple(scoring.option_order(4, 42, f"q{n}")) for n in range(20)}
    assert len(orders) > 3


def test_evaluate_system_scores_mc_free_form_and_abstention(trained, tokenizer, settings):
    questions = [_q(), _q("q2", "unanswerable", answer=None)]
    system = harness.System("tiny", trained, tokenizer)
    result = harness.evaluate_system(system, questions, settings)
    rows = result.rows.set_index("id")
    assert not pd.isna(rows.loc["q1", "mc_correct"]) and pd.isna(rows.loc["q2", "mc_correct"])
    assert bool(rows.loc["q2", "hallucinated"]) != bool(rows.loc["q2", "abstained"])
    summary = result.summary()
    assert summary["mc"]["value"] == float(rows.loc["q1", "mc_correct"]) and summary["mc"]["n"] == 1
    assert summary["hallucination"]["n"] == 1 and summary["latency_p50"] > 0
    assert result.peak_memory_mb > 0
    # each answer's cost: retrieval (none here), prompt, and its share of the batch's generation
    split = rows[["retrieval_s", "prefill_s", "decode_s"]].sum(axis=1)
    assert (rows["prefill_s"] > 0).all() and (rows["seconds"] >= split).all()
    assert (rows["seconds"] - split < 0.5).all()


def test_a_system_loaded_for_one_call_is_scored_like_a_resident_one_and_then_let_go(
        trained, tokenizer, settings):
    import copy
    import weakref
    from types import SimpleNamespace

    questions = [_q(), _q("q2", "unanswerable", answer=None)]
    resident = harness.evaluate_phrasings([harness.System("tiny", trained, tokenizer)], questions,
                                          settings)
    references = []

    def load():
        loaded = SimpleNamespace(model=copy.deepcopy(trained), tokenizer=tokenizer)
        references.append(weakref.ref(loaded.model))
        return loaded

    results = harness.evaluate_phrasings_loaded("tiny, loaded", load, questions, settings)
    assert set(results) == {("tiny, loaded", "canonical"), ("tiny, loaded", "variant")}
    for phrasing in ("canonical", "variant"):
        pd.testing.assert_frame_equal(results[("tiny, loaded", phrasing)].rows.drop(columns="system"),
                                      resident[("tiny", phrasing)].rows.drop(columns="system"))
    assert len(references) == 1 and references[0]() is None  # nothing holds the model any more
    with pytest.raises(TypeError, match="a function that loads the model"):
        harness.evaluate_phrasings_loaded("tiny", trained, questions, settings)


def test_evaluate_system_in_batches_gives_the_one_by_one_results(trained, tokenizer, settings):
    questions = [_q(), _q("q2", "unanswerable", answer=None), _q("q3", question="the ferry"),
                 _q("q4", question="a ticket costs four pounds for"), _q("q5", question="the")]
    system = harness.System("tiny", trained, tokenizer)
    rows = harness.evaluate_system(system, questions, settings).rows
    from ragft_helpers import rag

    alone = [rag.answer(q.question, model=trained, tokenizer=tokenizer, use_retrieval=False,
                        settings=settings) for q in questions]
    assert list(rows["answer"]) == [a.text for a in alone]
    choices = [harness.multiple_choice(system, q, settings) for q in questions if q.answerable]
    assert list(rows["mc_choice"].dropna()) == [c["mc_choice"] for c in choices]
    margins = rows["mc_margin"].dropna().tolist()
    assert margins == pytest.approx([c["mc_margin"] for c in choices], abs=1e-4)


def test_a_question_asked_both_ways_is_read_once(trained, tokenizer, settings, tmp_path,
                                                  monkeypatch):
    """Its options are scored on the keys and values of the free-form answer's prompt: no
    multiple-choice pass of its own, with or without retrieval, and the same choices."""
    (tmp_path / "a.md").write_text("# A\n\n## Times\n\nThe ferry leaves the harbour at seven.\n")
    index = store.open_collection(settings, name="read-once")
    store.index_folder(tmp_path, index, progress=False)
    questions = [_q("o1"), _q("o2", question="the ferry returns to the harbour at", answer="nine"),
                 _q("o3", "unanswerable", answer=None)]
    for system in (harness.System("once", trained, tokenizer),
                   harness.System("once-rag", trained, tokenizer, retrieval=True, collection=index)):
        expected = [harness.multiple_choice(system, q, settings) for q in questions[:2]]
        passes = []
        real = harness.choose_options
        monkeypatch.setattr(harness, "choose_options",
                            lambda *args, **kwargs: passes.append(args[2]) or real(*args, **kwargs))
        rows = harness.evaluate_system(system, questions, settings, reuse=False).rows
        monkeypatch.undo()
        assert passes == []  # every answerable question was scored on its free-form reading
        assert rows["mc_choice"].dropna().tolist() == [e["mc_choice"] for e in expected]
        assert rows["mc_margin"].dropna().tolist() == pytest.approx(
            [e["mc_margin"] for e in expected], abs=1e-4)
        assert rows["context_relevant"].dropna().tolist() == (
            [e["context_relevant"] for e in expected] if system.retrieval else [])
        # multiple choice alone still has its own pass
        harness.evaluate_system(system, questions, settings, free_form=[], reuse=False)


def test_free_form_can_run_on_a_subset(trained, tokenizer, settings):
    questions = [_q(), _q("q3")]
    result = harness.evaluate_system(harness.System("tiny", trained, tokenizer), questions,
                                      settings, free_form=questions[:1])
    assert result.rows["correct"].notna().tolist() == [True, False]
    assert result.rows["mc_correct"].notna().all()


def test_a_second_scoring_of_the_same_system_is_reloaded_not_recomputed(trained, tokenizer,
                                                                        settings, monkeypatch):
    import copy

    questions = [_q("r1"), _q("r2", "unanswerable", answer=None)]
    system = harness.System("tiny-reload", trained, tokenizer)
    first = harness.evaluate_system(system, questions, settings)
    assert not first.reloaded

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(harness, "answer_many", no_scoring)
    again = harness.evaluate_system(system, questions, settings)
    assert again.reloaded and again.seconds == first.seconds
    pd.testing.assert_frame_equal(again.rows, first.rows)
    # anything that changes a score scores again: the weights, a new question, the settings, or
    # reuse=False
    changed = copy.deepcopy(trained)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    for run in (lambda: harness.evaluate_system(harness.System("tiny-reload", changed, tokenizer),
                                                questions, settings),
                lambda: harness.evaluate_system(system, [*questions, _q("r3")], settings),
                lambda: harness.evaluate_system(system, questions, settings.with_budgets(rag_k=5)),
                lambda: harness.evaluate_system(system, questions, settings, reuse=False)):
        with pytest.raises(AssertionError, match="scored again"):
            run()


def test_scoring_gives_its_freed_buffers_back_and_a_reload_has_none_to_give(trained, tokenizer,
                                                                            settings, monkeypatch):
    calls = []
    monkeypatch.setattr(harness, "release_freed_memory", lambda: calls.append(1) or True)
    system = harness.System("tiny-trim", trained, tokenizer)
    questions = [_q("t1"), _q("t2", "unanswerable", answer=None)]
    harness.evaluate_system(system, questions, settings)
    assert calls == [1]  # once, after the new rows: the next model does not start on top of them
    assert harness.evaluate_system(system, questions, settings).reloaded and calls == [1]


def test_rows_scored_before_are_reused_by_a_call_on_other_questions_or_under_another_name(
        trained, tokenizer, settings, monkeypatch, tmp_path):
    questions = [_q("s1"), _q("s2", question="the ferry returns at", answer="nine"),
                 _q("s3", "unanswerable", answer=None)]
    system = harness.System("tiny-rows", trained, tokenizer)
    first = harness.evaluate_system(system, questions[:2], settings)
    asked = []

    def counting(texts, **kwargs):
        asked.extend(texts)
        return real_answer_many(texts, **kwargs)

    real_answer_many = harness.answer_many
    monkeypatch.setattr(harness, "answer_many", counting)
    # a superset under another name: only the new question is answered, the rest are the rows
    # scored before, and the costs add up over every row
    wider = harness.evaluate_system(replace(system, name="renamed"), questions, settings)
    assert asked == [questions[2].question] and not wider.reloaded
    pd.testing.assert_frame_equal(wider.rows.iloc[:2].drop(columns="system"),
                                  first.rows.drop(columns="system"), check_dtype=False)
    assert wider.seconds > first.seconds
    # a subset, multiple choice only: nothing scored at all
    asked.clear()
    only_choices = harness.evaluate_system(system, questions[1:2], settings, free_form=[])
    assert asked == [] and only_choices.reloaded
    assert only_choices.rows["mc_correct"].tolist() == first.rows["mc_correct"].tolist()[1:]
    # a retrieval system's k=None and the profile's rag_k are the same system
    (tmp_path / "a.md").write_text("# A\n\n## Times\n\nThe ferry leaves the harbour at seven.\n")
    index = store.open_collection(settings, name="rows-k")
    store.index_folder(tmp_path, index, progress=False)
    default_k = harness.System("k", trained, tokenizer, retrieval=True, collection=index)
    harness.evaluate_system(default_k, questions[:1], settings)
    asked.clear()
    explicit = harness.evaluate_system(replace(default_k, k=settings.profile.rag_k), questions[:1], settings)
    assert asked == [] and explicit.reloaded


class Index:
    """Chunks as an index returns them; the last one may be a notice."""

    name = "kb"

    def __init__(self, documents, notice_from=None):
        self.documents = documents
        self.notice_from = notice_from

    def get(self, include):
        metadatas = [{"source": "a.md"} for _ in self.documents]
        if self.notice_from:
            metadatas[-1] = {"source": "notice.md", "notice": True, "effective": self.notice_from}
        return {"ids": [f"c{n}" for n in range(len(self.documents))], "documents": self.documents,
                "metadatas": metadatas}

    def count(self):
        return len(self.documents)


def test_the_index_fingerprint_changes_with_any_chunk():
    base = score_cache.collection_fingerprint(Index(["one", "two"]))
    assert base == score_cache.collection_fingerprint(Index(["one", "two"]))
    assert base != score_cache.collection_fingerprint(Index(["one", "two!"]))
    assert base != score_cache.collection_fingerprint(Index(["one"]))


def test_score_keys_change_with_the_notices_in_force_not_with_the_date(tmp_path):
    """A run that crosses midnight keeps its scores; a notice coming into force scores again."""
    def key(as_of, index):
        settings = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path),
                                 "RAGFT_AS_OF": as_of})
        system = harness.System("s", None, None, retrieval=True, collection=index)
        return score_cache.evaluation_key(system, [], settings)

    with_notice = Index(["fares", "new fares"], notice_from="2026-03-01")
    assert key("2026-01-01", with_notice) == key("2026-02-28", with_notice)
    assert key("2026-02-28", with_notice) != key("2026-03-01", with_notice)
    assert key("2026-03-01", with_notice) == key("2027-12-31", with_notice)
    without = Index(["fares", "times"])
    assert key("2026-01-01", without) == key("2030-06-30", without)


def test_bootstrap_interval_is_deterministic_and_covers_the_true_rate():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        sample = rng.random(100) < 0.3
        mean, low, high = harness.bootstrap_ci(sample, n=500, seed=trial)
        covered += low <= 0.3 <= high
        assert low <= mean <= high
    assert 0.88 <= covered / 200 <= 0.99
    assert harness.bootstrap_ci([1, 0, 1], seed=3) == harness.bootstrap_ci([1, 0, 1], seed=3)
    assert all(np.isnan(harness.bootstrap_ci([])))


def test_results_round_trip_with_settings_and_versions(settings, tmp_path):
    from ragft_helpers.config import Provenance

    table = pd.DataFrame([{"system": "rag", "value": 0.5}])
    path = results.save_results({"accuracy": table, "note": "x"}, settings,
                                 provenance=[Provenance("model", "m", "s", "l")], results_dir=tmp_path)
    assert path == tmp_path / "showdown-smoke.json"
    loaded = results.load_results(settings, results_dir=tmp_path)
    assert loaded["accuracy"] == [{"system": "rag", "value": 0.5}]
    assert loaded["profile"]["name"] == "smoke" and "torch" in loaded["versions"]
    assert loaded["provenance"][0]["name"] == "m"
    with pytest.raises(FileNotFoundError, match="notebook 08"):
        results.load_results(settings, results_dir=tmp_path / "empty")


def test_side_by_side_handler_shows_answers_sources_and_correctness(trained, tokenizer, settings,
                                                                     tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "ferry.md").write_text("# Ferry\n\n## Times\n\nThe ferry leaves the harbour at seven.\n")
    collection = store.open_collection(settings, name="side-by-side")
    store.index_folder(folder, collection, progress=False)
    systems = [harness.System("alone", trained, tokenizer),
               harness.System("rag", trained, tokenizer, retrieval=True, collection=collection, k=1)]
    question = _q(question="When does the ferry leave the harbour?")
    rows = harness.side_by_side(question.question, systems, settings, questions=[question])
    assert [r["system"] for r in rows] == ["alone", "rag"]
    assert rows[0]["sources"] == [] and rows[1]["sources"][0][0].startswith("ferry.md")
    assert all(isinstance(r["right"], bool) for r in rows)
    unknown = harness.side_by_side("Is there a cafe?", systems[:1], settings, questions=[question])
    assert unknown[0]["right"] is None
    empty = harness.side_by_side("  ", systems[:1], settings)
    assert "empty" in empty[0]["error"]
    assert "ferry.md" in widgets.side_by_side_html(rows)


def test_retrieval_systems_record_whether_a_relevant_chunk_reached_the_prompt(trained, tokenizer,
                                                                             settings, tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\n## Times\n\nThe ferry leaves the harbour at seven.\n")
    (folder / "b.md").write_text("# B\n\n## Food\n\nThe cafe sells soup and hot drinks.\n")
    collection = store.open_collection(settings, name="relevance")
    store.index_folder(folder, collection, progress=False)
    ferry = Question("q1", "When does the ferry leave the harbour?", "seven", (), ("nine", "four", "two"),
                     (("a.md", "Times"),), "single-hop", ())
    soup = replace(ferry, id="q2", question="Is there soup in the cafe?")  # its source is still a.md
    systems = {method: harness.System(method, trained, tokenizer, retrieval=True, collection=collection,
                                      k=1, method=method) for method in ("hybrid", "random")}
    rows = harness.evaluate_system(systems["hybrid"], [ferry, soup], settings, reuse=False).rows.set_index("id")
    assert rows.loc["q1", "context_relevant"] and not rows.loc["q2", "context_relevant"]
    summary = harness.summarise(rows.reset_index())
    assert summary["mc_context_relevant"]["n"] == 1 and summary["mc_context_missing"]["n"] == 1
    alone = harness.evaluate_system(harness.System("alone", trained, tokenizer), [ferry], settings).rows
    assert alone["context_relevant"].isna().all() and "mc_context_relevant" not in harness.summarise(alone)
    # the control draws its chunks at random, and the method is part of what a score is saved under
    drawn = harness.evaluate_system(systems["random"], [ferry], settings)
    assert drawn.rows["answer"].notna().all()
    renamed = {method: replace(system, name="x") for method, system in systems.items()}
    assert score_cache.path_of(renamed["hybrid"], [ferry], settings) != score_cache.path_of(
        renamed["random"], [ferry], settings)


def test_misleading_counts_wrong_answers_and_answers_to_unanswerable_questions():
    rows = pd.DataFrame([
        {"type": "single-hop", "mc_correct": True, "correct": True, "abstained": False, "hallucinated": False},
        {"type": "single-hop", "mc_correct": False, "correct": False, "abstained": False, "hallucinated": False},
        {"type": "single-hop", "mc_correct": False, "correct": False, "abstained": True, "hallucinated": False},
        {"type": "unanswerable", "mc_correct": None, "correct": True, "abstained": True, "hallucinated": False},
        {"type": "unanswerable", "mc_correct": None, "correct": False, "abstained": False, "hallucinated": True},
    ]).astype({"mc_correct": "boolean", "correct": "boolean", "abstained": "boolean",
               "hallucinated": "boolean"}).assign(seconds=1.0)
    misleading = harness.summarise(rows)["misleading"]
    assert misleading["n"] == 5 and misleading["value"] == pytest.approx(2 / 5)  # a declined answer misleads no one


def test_sampled_answers_use_each_seed_once_per_prompt_and_diversity_reads_them(trained, tokenizer,
                                                                                  settings):
    system = harness.System("tiny", trained, tokenizer)
    prompts = ["the ferry leaves", "a ticket costs"]
    rows = harness.sampled_answers(system, prompts, settings, samples=3)
    assert list(rows.groupby("prompt", sort=False).size()) == [3, 3]
    elsewhere = replace(settings, cache_dir=settings.cache_dir / "elsewhere")  # nothing saved there
    fresh = harness.sampled_answers(system, prompts, elsewhere, samples=3)
    assert rows["answer"].tolist() == fresh["answer"].tolist()  # seeded: sampled again, the same
    repeated = pd.DataFrame({"prompt": ["p"] * 3, "answer": ["the ferry leaves at seven"] * 3})
    varied = pd.DataFrame({"prompt": ["p"] * 3, "answer": ["the ferry leaves at seven", "soup is sold "
                                                           "on board", "tickets cost four pounds"]})
    assert harness.diversity(repeated)["value"] < harness.diversity(varied)["value"] == 1.0
    assert harness.diversity(rows)["n"] <= 2


def test_side_by_side_widget_wires_the_handler(trained, tokenizer, settings):
    widget = widgets.side_by_side_widget([harness.System("alone", trained, tokenizer)],
                                          [_q()], settings)
    question, systems, ask, output = widget.children
    question.value = _q().question
    ask.click()
    assert "alone" in output.value


def test_accuracy_table_and_plot_have_one_bar_per_system_and_metric(trained, tokenizer, settings):
    import matplotlib

    matplotlib.use("Agg")
    result = harness.evaluate_system(harness.System("tiny", trained, tokenizer), [_q()], settings,
                                      free_form=[])
    table = harness.accuracy_table([result], ["mc", "mc_single-hop"])
    assert list(table["metric"]) == ["mc", "mc_single-hop"] and (table["n"] == 1).all()
    ax = viz.plot_accuracy(table, ["tiny"])
    assert len(ax.patches) == 2


def test_sampled_answers_and_perplexities_are_reloaded_and_redone_when_an_input_changes(
        trained, tokenizer, settings, monkeypatch):
    import copy

    from ragft_helpers import lm

    system = harness.System("tiny-sampled", trained, tokenizer)
    texts = {"ferry": "the ferry leaves the harbour at seven and returns at nine .",
             "market": "the island has a lighthouse , a school and a small market ."}
    rows = harness.sampled_answers(system, ["the ferry leaves"], settings, samples=2)
    table = harness.perplexity_table({"tiny": trained}, tokenizer, texts, settings)
    expected = lm.perplexity(trained, tokenizer, texts["ferry"], max_length=settings.profile.block_size,
                             stride=settings.profile.eval_stride,
                             max_tokens=settings.profile.eval_max_tokens, progress=False).perplexity
    assert table.loc["tiny", "ferry"] == pytest.approx(expected)

    def computed_again(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(harness, "generate", computed_again)
    monkeypatch.setattr(harness, "perplexity", computed_again)
    pd.testing.assert_frame_equal(harness.sampled_answers(system, ["the ferry leaves"], settings,
                                                          samples=2), rows)
    pd.testing.assert_frame_equal(harness.perplexity_table({"tiny": trained}, tokenizer, texts,
                                                           settings), table)
    changed = copy.deepcopy(trained)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    for run in (lambda: harness.sampled_answers(harness.System("tiny-sampled", changed, tokenizer),
                                                ["the ferry leaves"], settings, samples=2),
                lambda: harness.sampled_answers(system, ["a ticket costs"], settings, samples=2),
                lambda: harness.perplexity_table({"tiny": changed}, tokenizer, texts, settings),
                lambda: harness.perplexity_table({"tiny": trained}, tokenizer,
                                                 {**texts, "ferry": "the ferry is late ."}, settings)):
        with pytest.raises(AssertionError, match="computed again"):
            run()
