"""Task classification (notebook 07, ``ragft classify``): the data, prompts, label scoring, the kNN
vote, a tiny classifier run, the statistics and the command, all offline on tiny models."""
import json
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pandas as pd
import pytest

from ragft_helpers import cli, scoring, tasks
from ragft_helpers.assets import AssetError
from ragft_helpers.config import PROFILES, get_settings
from ragft_helpers.store import MissingIndexError
from tests.tiny_models import one_torch_thread, tiny_gpt2, tiny_tokenizer  # noqa: F401

LABEL_TEXT = " ".join(tasks.label_name(label) for label in tasks.DEFINITIONS)
WORDS = ("message : intent my dog is lost a refund please when does the ferry leave my car "
         "wheelchair " + LABEL_TEXT)


def ticket(id_, text, label, shot=0, split="train"):
    return tasks.Ticket(id_, text, label, split, shot)


@pytest.fixture
def smoke(tmp_path):
    return get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path)})


# ---- the data ------------------------------------------------------------------------------------

def test_tickets_load_with_splits_and_per_label_positions():
    tickets = tasks.load_tickets()
    assert len(tickets) == 1060
    train = tasks.select(tickets, "train", tasks.ORIGINAL_LABELS)
    assert len(train) == 600 and {t.shot for t in train} == set(range(60))
    two = tasks.select(tickets, "train", tasks.ORIGINAL_LABELS, per_label=2)
    eight = tasks.select(tickets, "train", tasks.ORIGINAL_LABELS, per_label=8)
    assert len(two) == 20 and set(two) <= set(eight), "smaller training sets are nested"
    assert all(t.label != tasks.NEW_LABEL for t in train)
    assert len(tasks.select(tickets, "test", [tasks.NEW_LABEL])) == 30


def test_the_test_sample_is_per_label_seeded_and_from_the_test_split(smoke):
    tickets = tasks.load_tickets()
    sample = tasks.test_set(tickets, smoke)
    assert len(sample) == 3 * len(tasks.ORIGINAL_LABELS)
    assert all(t.split == "test" for t in sample)
    assert sample == tasks.test_set(tickets, smoke)
    assert sample != tasks.test_set(tickets, replace(smoke, seed=7))
    laptop = replace(smoke, profile=PROFILES["laptop"])
    assert len(tasks.test_set(tickets, laptop)) == 250


def test_the_new_intent_is_scored_on_all_its_messages_and_a_sample_of_the_others(smoke):
    tickets = tasks.load_tickets()
    for split in ("validation", "test"):
        scored = tasks.new_intent_set(tickets, smoke, split)
        new = [t for t in scored if t.label == tasks.NEW_LABEL]
        assert new == tasks.select(tickets, split, [tasks.NEW_LABEL]) and new
        others = Counter(t.label for t in scored if t.label != tasks.NEW_LABEL)
        assert others == dict.fromkeys(tasks.ORIGINAL_LABELS, smoke.profile.task_curve_test_per_label)
        assert all(t.split == split for t in scored)
    with pytest.raises(ValueError, match="Unknown split 'tset'; the messages have: test, train, validation"):
        tasks.new_intent_set(tickets, smoke, "tset")


def test_every_label_has_a_definition():
    labels = {t.label for t in tasks.load_tickets()}
    assert labels == set(tasks.DEFINITIONS) and tasks.NEW_LABEL in labels


# ---- prompts -------------------------------------------------------------------------------------

def test_plain_prompt_lists_every_intent_then_the_examples_then_the_message():
    examples = [ticket("a", "my dog is lost", "pets"), ticket("b", "refund please", "refund")]
    prompt = tasks.build_task_prompt("when does the ferry leave", tiny_tokenizer(), examples=examples)
    for label in tasks.ORIGINAL_LABELS:
        assert f"- {tasks.label_name(label)}: {tasks.DEFINITIONS[label]}" in prompt
    assert tasks.NEW_LABEL not in prompt and "group travel" not in prompt
    assert prompt.index("my dog is lost") < prompt.index("Intent: pets") < prompt.index("refund please")
    assert prompt.endswith("Message: when does the ferry leave\nIntent:")
    assert prompt.startswith(tasks.prompt_prefix(tiny_tokenizer(), tasks.ORIGINAL_LABELS))


def test_chat_prompt_puts_examples_in_turns_and_strips_markup_from_messages():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    examples = [ticket("a", "my dog is lost<|im_end|>", "pets")]
    prompt = tasks.build_task_prompt("car <|im_start|>system", tokenizer, examples=examples)
    assert "<|im_start|>user\nMessage: my dog is lost<|im_end|>" in prompt
    assert "<|im_start|>assistant\npets<|im_end|>" in prompt
    assert "Message: car system<|im_end|>" in prompt, "markup inside a message is removed"
    assert prompt.endswith("<|im_start|>assistant\n")
    assert prompt.startswith(tasks.prompt_prefix(tokenizer, tasks.ORIGINAL_LABELS))


def test_an_empty_message_is_refused_with_an_example():
    with pytest.raises(ValueError, match="empty.*e.g."):
        tasks.build_task_prompt("   ", tiny_tokenizer())


# ---- label scoring -------------------------------------------------------------------------------

def test_choose_option_gives_the_same_scores_with_a_cached_prefix():
    tokenizer = tiny_tokenizer(WORDS)
    model = tiny_gpt2(tokenizer, n_positions=256).eval()
    prefix_text = tasks.prompt_prefix(tokenizer, tasks.ORIGINAL_LABELS)
    prompt = tasks.build_task_prompt("my car", tokenizer)
    options = [tasks.label_name(label) for label in tasks.ORIGINAL_LABELS]
    plain = scoring.choose_option(model, tokenizer, prompt, options)
    prefix = scoring.encode_prefix(model, tokenizer, prefix_text)
    cached = scoring.choose_option(model, tokenizer, prompt, options, prefix=prefix)
    assert cached[0] == plain[0]
    assert cached[1] == pytest.approx(plain[1], abs=1e-4)
    again = scoring.choose_option(model, tokenizer, prompt, options, prefix=prefix)
    assert again[1] == pytest.approx(plain[1], abs=1e-4), "the cached prefix is not changed by use"


def test_zero_shot_picks_the_label_with_the_highest_score():
    tokenizer = tiny_tokenizer(WORDS)
    model = tiny_gpt2(tokenizer, n_positions=256).eval()
    system = tasks.ZeroShot(model, tokenizer)
    prediction = system.predict("my dog is lost")
    assert set(prediction.scores) == set(tasks.ORIGINAL_LABELS)
    assert prediction.label == max(prediction.scores, key=prediction.scores.get)
    _, expected = scoring.choose_option(model, tokenizer, tasks.build_task_prompt("my dog is lost", tokenizer),
                                        [tasks.label_name(label) for label in tasks.ORIGINAL_LABELS])
    assert [prediction.scores[label] for label in tasks.ORIGINAL_LABELS] == pytest.approx(expected, abs=1e-4)


# ---- retrieval: few-shot and the kNN vote --------------------------------------------------------

def labels_in(where: dict) -> list[str]:
    """The labels a ``tasks.label_condition`` admits."""
    return labels_in(where["$and"][0]) if "$and" in where else where["label"]["$in"]


class FakeCollection:
    """Answers every query with fixed neighbours (id, text, label, similarity), filtered like Chroma."""

    name = "tickets"

    def __init__(self, found):
        self.found = found
        self.queries = []

    def count(self):
        return len(self.found)

    def get(self, include, where=None):
        rows = [r for r in self.found if where is None or r[2] in labels_in(where)]
        return {"ids": [r[0] for r in rows], "documents": [r[1] for r in rows],
                "metadatas": [{"label": r[2], "shot": 0} for r in rows]}

    def query(self, query_texts, n_results, where, include):
        self.queries.append(where)
        rows = self.found[:n_results]
        return {"ids": [[r[0] for r in rows]], "documents": [[r[1] for r in rows]],
                "metadatas": [[{"label": r[2], "shot": 0} for r in rows]],
                "distances": [[1.0 - r[3] for r in rows]]}


def test_knn_vote_weighs_neighbours_by_similarity():
    collection = FakeCollection([("a", "x", "fares", 0.9), ("b", "y", "pets", 0.5),
                                 ("c", "z", "pets", 0.3), ("d", "w", "refund", 0.2)])
    prediction = tasks.KNN(collection, k=4, balanced=False).predict("how much is a dog")
    assert prediction.label == "fares"  # 0.9 beats 0.5 + 0.3
    assert prediction.scores["pets"] == pytest.approx(0.8 / 1.9)
    assert sum(prediction.scores.values()) == pytest.approx(1.0)
    three = tasks.KNN(FakeCollection([("a", "x", "fares", 0.6), ("b", "y", "pets", 0.5),
                                      ("c", "z", "pets", 0.3)]), k=3, balanced=False).predict("a dog")
    assert three.label == "pets"


def test_a_balanced_vote_divides_each_intent_by_its_indexed_messages():
    # two pets neighbours outvote one group_travel neighbour, unless each sum is divided by how
    # many messages of the intent the index holds (pets 4, group_travel 1)
    collection = FakeCollection([("a", "x", "pets", 0.5), ("b", "y", "pets", 0.45),
                                 ("c", "z", "group_travel", 0.6), ("d", "w", "pets", 0.1),
                                 ("e", "v", "pets", 0.1)])
    labels = ("pets", "group_travel")
    assert tasks.KNN(collection, labels=labels, k=3, balanced=False).predict("ten of us").label == "pets"
    balanced = tasks.KNN(collection, labels=labels, k=3)
    assert balanced.label_counts() == {"pets": 4, "group_travel": 1}
    prediction = balanced.predict("ten of us")
    assert prediction.label == "group_travel"
    assert prediction.scores["pets"] == pytest.approx((0.95 / 4) / (0.95 / 4 + 0.6))
    collection.found += [("f", "u", "group_travel", 0.05)] * 3  # indexed later: counted again
    assert balanced.label_counts()["group_travel"] == 4
    equal = FakeCollection([("a", "x", "fares", 0.9), ("b", "y", "pets", 0.5), ("c", "z", "pets", 0.3),
                            ("d", "w", "fares", 0.1)])
    assert (tasks.KNN(equal, k=3).predict("a").scores
            == pytest.approx(tasks.KNN(equal, k=3, balanced=False).predict("a").scores))


def test_a_second_evaluation_is_reloaded_and_a_changed_index_scores_again(smoke):
    collection = FakeCollection([("a", "x", "fares", 0.9), ("b", "y", "pets", 0.5)])
    knn = tasks.KNN(collection, k=2)
    messages = [ticket("t1", "how much is a dog", "pets", split="test"),
                ticket("t2", "fare to orvanay", "fares", split="test")]
    first = tasks.evaluate(knn, messages, progress=False, settings=smoke)
    asked = len(collection.queries)
    again = tasks.evaluate(knn, messages, progress=False, settings=smoke)
    assert len(collection.queries) == asked  # reloaded: nothing was classified
    pd.testing.assert_frame_equal(again, first)
    collection.found.append(("c", "z", "pets", 0.3))  # the index changed: classified again
    tasks.evaluate(knn, messages, progress=False, settings=smoke)
    assert len(collection.queries) == asked + len(messages)
    tasks.evaluate(knn, messages, progress=False, settings=smoke, reuse=False)
    tasks.evaluate(knn, messages, progress=False)  # no settings: nothing saved or reloaded
    assert len(collection.queries) == asked + 3 * len(messages)


def test_an_evaluation_on_other_messages_classifies_only_those_not_classified_yet(smoke):
    collection = FakeCollection([("a", "x", "fares", 0.9), ("b", "y", "pets", 0.5)])
    messages = [ticket("t1", "how much is a dog", "pets", split="test"),
                ticket("t2", "fare to orvanay", "fares", split="test"),
                ticket("t3", "can my cat come", "pets", split="test")]
    first = tasks.evaluate(tasks.KNN(collection, k=2), messages[:2], progress=False, settings=smoke)
    asked = len(collection.queries)
    # another instance of the same system, on a superset: only the third message is classified
    superset = tasks.evaluate(tasks.KNN(collection, k=2), messages, progress=False, settings=smoke)
    assert len(collection.queries) == asked + 1
    pd.testing.assert_frame_equal(superset.iloc[:2], first)  # the same rows, latencies included
    subset = tasks.evaluate(tasks.KNN(collection, k=2), messages[1:], progress=False, settings=smoke)
    assert len(collection.queries) == asked + 1
    assert subset["id"].tolist() == ["t2", "t3"]
    # another system (here: more neighbours) shares no rows
    tasks.evaluate(tasks.KNN(collection, k=1), messages[:2], progress=False, settings=smoke)
    assert len(collection.queries) == asked + 3


def test_neighbours_filter_by_labels_and_examples_per_label():
    collection = FakeCollection([("a", "x", "fares", 0.9)])
    tasks.KNN(collection, labels=("fares", "pets"), k=1, per_label=8).predict("fare?")
    assert collection.queries[-1] == {"$and": [{"label": {"$in": ["fares", "pets"]}}, {"shot": {"$lt": 8}}]}
    tasks.KNN(collection, labels=("fares",), k=1).predict("fare?")
    assert collection.queries[-1] == {"label": {"$in": ["fares"]}}


def test_few_shot_puts_the_most_similar_example_last():
    tokenizer = tiny_tokenizer(WORDS)
    model = tiny_gpt2(tokenizer, n_positions=256).eval()
    collection = FakeCollection([("a", "my dog is lost", "pets", 0.9), ("b", "refund please", "refund", 0.4)])
    system = tasks.FewShot(model, tokenizer, collection=collection, k=2)
    prediction = system.predict("my dog")
    assert [e.text for e in prediction.examples] == ["refund please", "my dog is lost"]
    prompt = tasks.build_task_prompt("my dog", tokenizer, examples=prediction.examples)
    assert prompt.index("refund please") < prompt.index("my dog is lost") < prompt.rindex("my dog")


def test_indexing_twice_adds_nothing_and_a_label_can_be_removed(smoke):
    import chromadb

    class WordHash:
        def __call__(self, input):
            return [[float(sum(map(ord, w)) % 7 == i) + 0.01 for i in range(8)] for w in input]

        @staticmethod
        def name():
            return "test-word-hash"

        def get_config(self):
            return {}

        @staticmethod
        def build_from_config(config):
            return WordHash()

        def is_legacy(self):
            return False

        def default_space(self):
            return "cosine"

        def supported_spaces(self):
            return ["cosine"]

    from ragft_helpers import store

    collection = store.open_collection(smoke, name="tickets-test", client=chromadb.EphemeralClient(),
                                       embedding_function=WordHash())
    batch = [ticket("a1", "my dog", "pets"), ticket("b1", "a refund", "refund"),
             ticket("g1", "school trip", tasks.NEW_LABEL)]
    assert tasks.index_tickets(collection, batch)[0] == 3
    assert tasks.index_tickets(collection, batch)[0] == 0
    assert collection.count() == 3
    assert tasks.remove_label(collection, tasks.NEW_LABEL) == 1 and collection.count() == 2


# ---- a tiny classifier ---------------------------------------------------------------------------

TINY_LABELS = ["pets", "refund", "timetable"]
TINY_TEXTS = {"pets": "my dog is lost", "refund": "a refund please", "timetable": "when does the ferry leave"}


def tiny_training_messages():
    """Eight labelled messages per label of :data:`TINY_LABELS`."""
    return [ticket(f"{label}{i}", TINY_TEXTS[label], label, i) for label in TINY_LABELS for i in range(8)]


def tiny_sequence_classifier(tokenizer, **config):
    """A GPT-2 classifier over :data:`TINY_LABELS`, seeded; ``config`` overrides ``GPT2Config``."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    return GPT2ForSequenceClassification(GPT2Config(
        vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=2, n_head=2,
        num_labels=len(TINY_LABELS), pad_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, **config))


def test_causal_lm_classifiers_recompute_activations_and_train_as_without(tmp_path):
    """The causal-LM kinds train with activation checkpointing (memory at laptop); with the same
    budgets and start they take the steps the encoder kind, which keeps its activations, takes."""
    tokenizer = tiny_tokenizer(WORDS)
    settings = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path),
                             "RAGFT_PRECISION": "fp32"}).with_budgets(
        task_batch_size=8, task_min_steps=1, task_epochs=5.0, task_lm_epochs=5.0,
        task_learning_rate=3e-3, task_lm_learning_rate=3e-3, task_lm_optimizer="adamw_torch")
    runs = {}
    for kind in ("minilm", "lm-full"):
        model = tiny_sequence_classifier(tokenizer, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        trained, _, runs[kind] = tasks.train_classifier(kind, tiny_training_messages(), TINY_LABELS,
                                                        settings, base=(model, tokenizer))
        assert trained.is_activation_checkpointing == (kind == "lm-full")
    assert runs["lm-full"].steps == runs["minilm"].steps == 15
    assert runs["lm-full"].final_loss < runs["lm-full"].first_loss / 2
    assert runs["lm-full"].first_loss == pytest.approx(runs["minilm"].first_loss, rel=1e-5)
    assert runs["lm-full"].final_loss == pytest.approx(runs["minilm"].final_loss, rel=1e-4)


def test_a_tiny_classifier_run_lowers_its_loss_and_learns_the_labels(tmp_path):
    tokenizer = tiny_tokenizer(WORDS)
    labels, texts, train = TINY_LABELS, TINY_TEXTS, tiny_training_messages()
    model = tiny_sequence_classifier(tokenizer)
    settings = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path),
                             "RAGFT_PRECISION": "fp32"}).with_budgets(
        task_batch_size=8, task_min_steps=20, task_learning_rate=3e-3)
    trained, tok, run = tasks.train_classifier("minilm", train, labels, settings, base=(model, tokenizer))
    assert run.steps == 20 and run.training_messages == 24
    assert run.final_loss < run.first_loss / 2
    system = tasks.FineTuned(trained, tok, labels)
    assert [system.predict(texts[label]).label for label in labels] == labels


def test_overtraining_records_every_epoch_and_early_stopping_reads_the_best_one(tmp_path):
    tokenizer = tiny_tokenizer(WORDS)
    labels, texts, train = TINY_LABELS, TINY_TEXTS, tiny_training_messages()
    # held-out messages the training data contradicts: the more confident the model, the worse
    held_out = [ticket(f"h{label}", texts[label], labels[(n + 1) % 3]) for n, label in enumerate(labels)]
    settings = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path),
                             "RAGFT_PRECISION": "fp32"}).with_budgets(task_batch_size=8,
                                                                      task_learning_rate=3e-3)
    curve = tasks.overtraining_curve(train, held_out, held_out, settings, epochs=6, labels=labels,
                                     base=(tiny_sequence_classifier(tokenizer), tokenizer))
    assert list(curve["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]
    assert curve["validation_loss"].iloc[-1] > curve["validation_loss"].iloc[0]  # it over-fits
    stop = tasks.early_stopping(curve)
    assert stop["best_epoch"] == int(curve.loc[curve["validation_loss"].idxmin(), "epoch"]) < 6
    assert stop["validation_best"] < stop["validation_last"] and stop["test_best"] < stop["test_last"]
    # the test loss is measured twice: with the best epoch's weights, kept aside, and the last ones;
    # here the test messages are the validation messages, so each equals that epoch's validation loss
    measured = curve.dropna(subset=["test_loss"])
    assert list(measured["epoch"]) == [stop["best_epoch"], 6]
    assert stop["test_best"] == pytest.approx(stop["validation_best"], rel=1e-5)
    assert stop["test_last"] == pytest.approx(stop["validation_last"], rel=1e-5)


def test_the_overtraining_curve_is_saved_so_a_rerun_trains_nothing(tmp_path, monkeypatch):
    trained = []

    def train(*args, **kwargs):
        trained.append(args)
        return pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "validation_loss": [0.9, 1.1],
                             "test_loss": [0.8, 1.0]})

    monkeypatch.setattr(tasks, "_overtraining_curve", train)
    monkeypatch.setattr(tasks, "_base", lambda kind, settings: SimpleNamespace(name="encoder", location="here"))
    settings = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path)})
    messages = [ticket(f"p{i}", f"my dog number {i}", "pets", i) for i in range(3)]
    first = tasks.overtraining_curve(messages, messages[:1], messages[1:], settings)
    again = tasks.overtraining_curve(messages, messages[:1], messages[1:], settings)
    assert len(trained) == 1
    pd.testing.assert_frame_equal(again, first)
    tasks.overtraining_curve(messages[:2], messages[:1], messages[1:], settings)  # other messages
    tasks.overtraining_curve(messages, messages[:1], messages[1:], settings, epochs=3)
    assert len(trained) == 3


def test_training_refuses_labels_it_was_not_given(smoke):
    with pytest.raises(ValueError, match="not in"):
        tasks.train_classifier("minilm", [ticket("a", "x", "pets")], ["refund"], smoke, base=(None, None))


def test_classifier_folders_are_keyed_by_messages_labels_and_budgets(smoke):
    train = [ticket("a", "my dog", "pets")]
    folder = tasks.classifier_dir("minilm", train, tasks.ORIGINAL_LABELS, smoke)
    assert folder.parent == smoke.cache_dir / "finetuned" / "smoke" and folder.name.startswith("task-minilm-")
    assert folder == tasks.classifier_dir("minilm", train, tasks.ORIGINAL_LABELS, smoke)
    assert folder != tasks.classifier_dir("minilm", train + [ticket("b", "x", "pets")], tasks.ORIGINAL_LABELS, smoke)
    assert folder != tasks.classifier_dir("minilm", train, [*tasks.ORIGINAL_LABELS, tasks.NEW_LABEL], smoke)
    assert folder != tasks.classifier_dir("minilm", train, tasks.ORIGINAL_LABELS,
                                          smoke.with_budgets(task_epochs=9.0))


def test_minilm_trains_with_fused_adamw_and_its_folder_is_keyed_by_the_optimiser(smoke, monkeypatch):
    train = [ticket("a", "my dog", "pets")]
    for name in PROFILES:
        settings = get_settings({"RAGFT_PROFILE": name, "RAGFT_CACHE_DIR": str(smoke.cache_dir)})
        assert tasks.classifier_budget(tasks.CLASSIFIERS["minilm"], settings)["optimizer"] == "adamw_torch_fused"
    folder = tasks.classifier_dir("minilm", train, tasks.ORIGINAL_LABELS, smoke)
    monkeypatch.setattr(tasks, "ENCODER_OPTIMIZER", "adamw_torch")
    assert folder != tasks.classifier_dir("minilm", train, tasks.ORIGINAL_LABELS, smoke)


def test_minilm_attends_by_plain_matrix_products_with_the_same_logits(smoke, monkeypatch):
    """MiniLM skips torch's fused attention kernel (slow backward on short messages) and scores
    every message as the library's default attention does; its folder is keyed by the choice."""
    import torch
    from transformers import AutoModelForSequenceClassification

    kind = tasks.CLASSIFIERS["minilm"]
    model, tokenizer = tasks._load_base(kind, tasks.ORIGINAL_LABELS, smoke)
    default = AutoModelForSequenceClassification.from_pretrained(
        tasks._base(kind, smoke).location, num_labels=len(tasks.ORIGINAL_LABELS))
    default.load_state_dict(model.state_dict())
    batch = tokenizer(["can i bring my dog", "Dear Sir, my crossing on 3 May was cancelled and I "
                       "would like my money back, please."], padding=True, return_tensors="pt")
    with torch.inference_mode(), torch.profiler.profile() as profile:
        logits = model.eval()(**batch).logits
    assert not [e.key for e in profile.key_averages() if "scaled_dot_product" in e.key]
    with torch.inference_mode():
        assert torch.allclose(logits, default.eval()(**batch).logits, atol=1e-5)
    train = [ticket("a", "my dog", "pets")]
    folder = tasks.classifier_dir("minilm", train, tasks.ORIGINAL_LABELS, smoke)
    monkeypatch.setitem(tasks.CLASSIFIERS, "minilm", replace(kind, attention="sdpa"))
    assert folder != tasks.classifier_dir("minilm", train, tasks.ORIGINAL_LABELS, smoke)


def test_loading_an_untrained_classifier_names_what_trains_it(smoke):
    with pytest.raises(AssetError, match="notebook 07.*ensure_classifier"):
        tasks.load_classifier("minilm", [ticket("a", "x", "pets")], smoke)


# ---- statistics ----------------------------------------------------------------------------------

def test_macro_f1_and_its_interval():
    true = ["a", "a", "b", "b"]
    assert tasks.macro_f1(true, true) == 1.0
    assert tasks.macro_f1(true, ["a", "a", "a", "a"]) == pytest.approx((2 / 3 + 0) / 2)
    value, low, high = tasks.bootstrap_macro_f1(true * 10, ["a", "b", "b", "b"] * 10)
    assert low <= value <= high and high - low > 0


def test_summary_confusion_matrix_recall_and_separation():
    rows = pd.DataFrame({"system": "s", "id": list("123456"), "label": ["a", "a", "b", "b", "c", "c"],
                         "predicted": ["a", "a", "b", "a", "c", "c"], "seconds": 0.01})
    rows["correct"] = rows["label"] == rows["predicted"]
    summary = tasks.summarise(rows)
    assert summary["accuracy"] == pytest.approx(5 / 6) and summary["ms_per_message"] == pytest.approx(10)
    matrix = tasks.confusion_matrix(rows, ["a", "b", "c", "d"])
    assert matrix.loc["b", "a"] == 1 and matrix.loc["d"].sum() == 0 and matrix.values.sum() == 6
    assert tasks.recall(rows, "b") == 0.5 and tasks.recall(rows, "a") == 1.0
    table = pd.DataFrame({"macro_f1_low": [0.8, 0.5], "macro_f1_high": [0.9, 0.7]}, index=["x", "y"])
    assert tasks.separated(table, "x", "y") and not tasks.separated(table, "y", "x")


def curve(values):
    return pd.DataFrame([{"per_label": n, "system": system, "macro_f1": value}
                         for n, row in values.items() for system, value in row.items()])


def test_crossover_finds_where_fine_tuning_stays_ahead():
    crossed = curve({2: {"fine-tuned": 0.2, "kNN": 0.5, "few-shot": 0.4},
                     8: {"fine-tuned": 0.6, "kNN": 0.7, "few-shot": 0.5},
                     32: {"fine-tuned": 0.9, "kNN": 0.8, "few-shot": 0.7}})
    assert tasks.crossover(crossed) == {"status": "crossed", "per_label": 32, "below": 8,
                                        "margin": pytest.approx(0.1)}
    never = curve({2: {"fine-tuned": 0.2, "kNN": 0.5, "few-shot": 0.4},
                   8: {"fine-tuned": 0.6, "kNN": 0.7, "few-shot": 0.5}})
    assert tasks.crossover(never)["status"] == "never"
    ahead = curve({2: {"fine-tuned": 0.6, "kNN": 0.5, "few-shot": 0.4}})
    assert tasks.crossover(ahead)["status"] == "always ahead"


# ---- ragft classify ------------------------------------------------------------------------------

class FixedSystem:
    name = "fixed"

    def predict(self, text):
        return tasks.Prediction("pets" if "dog" in text else "fares", {"pets": 0.7, "fares": 0.3})


def test_classify_prints_the_label_and_scores(monkeypatch, capsys):
    monkeypatch.setattr(tasks, "load_method", lambda method, settings, classifier: FixedSystem())
    assert cli.main(["classify", "can I bring my dog", "--method", "knn"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pets\tcan I bring my dog") and "pets 0.700, fares 0.300" in out


def test_classify_a_file_writes_one_result_per_line(monkeypatch, tmp_path):
    seen = {}

    def fake_load(method, settings, classifier):
        seen.update(method=method, classifier=classifier)
        return FixedSystem()

    monkeypatch.setattr(tasks, "load_method", fake_load)
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"text": "my dog"}\n\n{"text": "a single to Orvanay", "id": 3}\n')
    assert cli.main(["classify", "--in", str(source), "--out", str(target), "--classifier", "lm-lora"]) == 0
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["label"] for r in records] == ["pets", "fares"] and records[0]["scores"]["pets"] == 0.7
    assert seen == {"method": "finetuned", "classifier": "lm-lora"}


@pytest.mark.parametrize("argv, message", [
    (["classify", "   "], "message is empty"),
    (["classify", "--in", "MISSING"], "no such file"),
])
def test_classify_bad_input_is_a_clear_error(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_classify_a_file_line_without_text_names_the_line(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "ok"}\n{"message": "no text key"}\n')
    assert cli.main(["classify", "--in", str(source)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_classify_rejects_an_unknown_method(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["classify", "hello", "--method", "magic"])
    assert exit_info.value.code == 2 and "invalid choice: 'magic'" in capsys.readouterr().err


def test_classify_before_training_names_notebook_07(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RAGFT_PROFILE", "smoke")
    monkeypatch.setenv("RAGFT_CACHE_DIR", str(tmp_path))
    assert cli.main(["classify", "can I bring my dog", "--method", "finetuned"]) == 2
    err = capsys.readouterr().err
    assert "No fine-tuned 'minilm' classifier" in err and "notebook 07" in err
    assert "ensure_classifier" in err


def test_retrieval_methods_need_the_indexed_messages(monkeypatch, smoke):
    monkeypatch.setattr(tasks, "open_tickets", lambda settings: SimpleNamespace(
        get=lambda ids, include: {"ids": ids[:3]}))
    with pytest.raises(MissingIndexError, match="3 of the 200.*notebook 07"):
        tasks.load_method("knn", smoke)
    with pytest.raises(ValueError, match="Unknown method"):
        tasks.load_method("magic", smoke)
