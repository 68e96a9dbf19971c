"""Retrieval-augmented fine-tuning: the split, example building, label masking, a tiny run."""
from dataclasses import replace

import pytest

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import raft, rag, store
from ragft_helpers.assets import AssetError, ResolvedModel
from ragft_helpers.config import PROFILES, Provenance, get_settings
from ragft_helpers.qa import TYPES, Question, load_questions
from tests.tiny_models import one_torch_thread, tiny_gpt2, tiny_tokenizer  # noqa: F401 (autouse fixture)

FILES = {
    "tern-card.md": "# Tern Card\n\n## Cost\n\nThe Tern Card costs four pounds a year. It is sold "
                    "at the harbour.\n\n## Benefits\n\nHolders get two free crossings.\n",
    "island.md": "# Island\n\n## School\n\nThe island has a lighthouse and a school.\n",
}
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def question(id_, text="how much is the tern card ?", answer="four pounds", type_="single-hop",
             section=("tern-card.md", "Cost")):
    return Question(id_, text, None if type_ == "unanswerable" else answer, (),
                    ("two pounds", "nine", "seven"), (section,), type_,
                    ("a ticket costs four pounds .",), variants=("tern card price ?",))


@pytest.fixture
def settings(tmp_path):
    base = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path / "cache")})
    return base.with_budgets(rag_k=1, raft_phrasings=2, raft_abstain_share=0.25)


@pytest.fixture
def collection(settings, tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    collection = store.open_collection(settings, "raft-test")
    store.index_folder(folder, collection, progress=False, settings=settings)
    return collection


def test_the_split_is_by_article_and_keeps_every_question_type_on_both_sides():
    questions = load_questions()
    held_out = raft.test_articles()
    train, test = raft.split_questions(questions, held_out)
    assert 0.25 <= len(held_out) / 35 <= 0.4
    for q in train:
        assert not {a for a, _ in q.sources} & held_out
    for q in test:
        assert {a for a, _ in q.sources} <= held_out
    for type_ in set(TYPES) - {"updated"}:
        assert any(q.type == type_ for q in train) and any(q.type == type_ for q in test), type_
    assert not any(q.type == "updated" for q in train + test)


def test_examples_force_the_oracle_in_or_remove_it_for_the_abstention_share(collection, settings):
    tokenizer = tiny_tokenizer()
    questions = [question(f"q{n}") for n in range(60)]
    examples = raft.build_examples(questions, collection, tokenizer, settings)
    with_oracle = [e for e in examples if e.oracle]
    assert 80 <= len(with_oracle) <= 100  # 120 phrasings (question + one variant), a quarter without
    # abstention targets are capped at the share: 25% of all examples, i.e. a third of the others
    assert len(examples) - len(with_oracle) <= len(with_oracle) // 3
    assert all(e.sources == ("tern-card.md > Tern Card > Cost",) == (e.oracle_label,)
               for e in with_oracle)
    # the target cites the oracle's place in the context
    assert all(e.target == "[1]: The Tern Card costs four pounds a year." for e in with_oracle)
    abstaining = [e for e in examples if not e.oracle]
    assert all(e.target == rag.ABSTAIN_TEXT and "tern-card.md > Tern Card > Cost" not in e.sources
               and e.oracle_label == "" for e in abstaining)
    assert 0.12 <= len(abstaining) / len(examples) <= 0.38  # share 0.25
    none = raft.build_examples(questions[:5], collection, tokenizer,
                               settings.with_budgets(raft_abstain_share=0.0))
    assert all(e.oracle for e in none)


def test_an_abstention_context_holds_no_chunk_that_states_the_answer(settings, tmp_path):
    # another article repeats the answer: with the oracle left out, that chunk is left out too
    folder = tmp_path / "kb-repeated"
    folder.mkdir()
    for name, text in {**FILES, "fares.md": "# Fares\n\n## Cards\n\nA Tern Card is four pounds "
                                            "from the purser on board.\n"}.items():
        (folder / name).write_text(text, encoding="utf-8")
    collection = store.open_collection(settings, "raft-repeated")
    store.index_folder(folder, collection, progress=False, settings=settings)
    questions = [question(f"q{n}") for n in range(40)]
    examples = raft.build_examples(questions, collection, tiny_tokenizer(),
                                   settings.with_budgets(rag_k=2))
    abstaining = [e for e in examples if not e.oracle]
    assert abstaining and all(e.target == rag.ABSTAIN_TEXT for e in abstaining)
    assert not any("four pounds" in e.prompt for e in abstaining)
    assert not any({"fares.md > Fares > Cards", "tern-card.md > Tern Card > Cost"} & set(e.sources)
                   for e in abstaining)
    # the chunk that repeats the answer is still a distractor where the oracle is in the context
    assert any("fares.md > Fares > Cards" in e.sources for e in examples if e.oracle)


def test_leaking_examples_are_left_out_before_the_abstention_cap(collection, settings):
    tokenizer = tiny_tokenizer()
    questions = [question(f"q{n}") for n in range(60)]
    # a held-out question whose answer is in every oracle target: every answering example leaks
    held_out = [question("t1", "what does the card cost ?", answer="four pounds")]
    examples = raft.build_examples(questions, collection, tokenizer, settings,
                                   held_out_questions=held_out)
    assert raft.leaks(examples, held_out) == []
    assert examples == []  # no answering examples left, so no abstention targets either


def test_unanswerable_questions_teach_the_abstention(collection, settings):
    unanswerable = question("u1", "when was the school painted ?", type_="unanswerable",
                            section=("island.md", "School"))
    answerable = [question(f"q{n}") for n in range(6)]
    examples = raft.build_examples([unanswerable, *answerable], collection, tiny_tokenizer(),
                                   settings.with_budgets(raft_abstain_share=0.5))
    taught = [e for e in examples if e.question_id == "u1"]
    assert taught and all(e.target == rag.ABSTAIN_TEXT and not e.oracle for e in taught)
    alone = raft.build_examples([unanswerable], collection, tiny_tokenizer(), settings)
    assert alone == []  # no answers to balance them: abstention targets alone teach nothing else


def test_prompts_use_the_chat_template_and_only_the_target_carries_loss(collection, settings):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    example = raft.build_examples([question("q1")], collection, tokenizer,
                                  settings.with_budgets(raft_abstain_share=0.0))[0]
    assert example.prompt.startswith("<|system|>") and example.prompt.endswith("<|assistant|>")
    encoded = raft.encode(example, tokenizer)
    prompt_length = len(tokenizer(example.prompt, add_special_tokens=False)["input_ids"])
    target = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert encoded["labels"][:prompt_length] == [-100] * prompt_length
    assert encoded["labels"][prompt_length:] == target == encoded["input_ids"][prompt_length:]


def test_leaks_are_found():
    held_out = [question("t1", "who runs the cafe ?", answer="the purser")]
    clean = raft.RaftExample("q1", "?", (), True, "x", "The card costs four pounds.", "p")
    leaked = raft.RaftExample("q2", "?", (), True, "x", "Ask the Purser at the desk.", "p")
    asked = raft.RaftExample("q3", "?", (), True, "x", "Who runs the cafe?", "p")
    assert raft.leaks([clean], held_out) == []
    cited = raft.RaftExample("q4", "?", (), True, "x", "[2]: The card costs four pounds.", "p")
    assert raft.leaks([cited], [question("t2", "how many ?", answer="2")]) == []
    assert raft.leaks([leaked, asked], held_out) == ["t1: 'who runs the cafe ?'", "t1: 'the purser'"]


def test_a_tiny_reader_learns_its_targets_and_saves_by_settings(collection, settings):
    tokenizer = tiny_tokenizer()
    base = ResolvedModel(tiny_gpt2(tokenizer, n_positions=256), tokenizer,
                         Provenance("model", "tiny", "test", "-"))
    examples = raft.build_examples([question(f"q{n}") for n in range(8)], collection, tokenizer,
                                   settings)
    tuned = settings.with_budgets(raft_max_steps=30, raft_full_max_steps=None, raft_learning_rate=3e-3,
                                  train_batch_size=4)
    model, _, run = raft.train_reader("raft-full", examples, tuned, base=base)
    assert run.steps == 30 and run.final_loss < run.first_loss / 2
    assert 0 < run.oracle_share < 1 and run.trainable_params == run.total_params
    # The adapter learns through the recomputed (checkpointed) activations too: LoRA's B matrices
    # start at zero and move only if gradients reach them.
    fresh = ResolvedModel(tiny_gpt2(tokenizer, n_positions=256), tokenizer, base.provenance)
    adapter, _, lora_run = raft.train_reader("raft-lora", examples, tuned.with_budgets(lora_rank=8), base=fresh)
    assert lora_run.final_loss < lora_run.first_loss and lora_run.trainable_params < lora_run.total_params / 5
    moved = [p.abs().max().item() for name, p in adapter.named_parameters() if "lora_B" in name]
    assert moved and min(moved) > 0
    assert raft.reader_dir("raft-full", tuned) != raft.reader_dir("raft-full", tuned.with_budgets(
        raft_learning_rate=1e-4))
    assert raft.reader_dir("raft-lora", tuned) != raft.reader_dir("raft-lora", tuned.with_budgets(lora_rank=4))


def test_reader_batches_are_padded_to_a_multiple_of_64_and_the_loss_does_not_change(collection, settings):
    import torch

    from ragft_helpers.lm import ensure_pad_token
    from ragft_helpers.training import targets_only_loss

    tokenizer = ensure_pad_token(tiny_tokenizer())
    examples = raft.build_examples([question(f"q{n}") for n in range(6)], collection, tokenizer, settings)
    rows = [raft.encode(e, tokenizer) for e in examples]
    model = tiny_gpt2(tokenizer, n_positions=256).eval()

    def loss(batch):
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        logits_to_keep=batch["logits_to_keep"])
        return targets_only_loss(out, batch["labels"]).item()

    for row in rows:
        padded = raft.reader_collator(tokenizer)([row])
        plain = raft.reader_collator(tokenizer, pad_to_multiple_of=None)([row])
        assert padded["input_ids"].shape[1] % raft.PAD_MULTIPLE == 0
        assert plain["input_ids"].shape[1] == len(row["input_ids"])
        assert (padded["labels"][0, len(row["input_ids"]):] == -100).all()
        assert loss(padded) == pytest.approx(loss(plain), abs=1e-5)
    assert any(len(row["input_ids"]) % raft.PAD_MULTIPLE for row in rows)  # padding was added


def test_the_full_reader_can_have_a_step_budget_of_its_own(settings):
    both = settings.with_budgets(raft_max_steps=96, raft_full_max_steps=None)
    split = both.with_budgets(raft_full_max_steps=48)
    assert raft.reader_steps("raft-full", both) == raft.reader_steps("raft-lora", both) == 96
    assert (raft.reader_steps("raft-full", split), raft.reader_steps("raft-lora", split)) == (48, 96)
    assert raft.reader_dir("raft-full", split) != raft.reader_dir("raft-full", both)
    assert raft.reader_dir("raft-lora", split) == raft.reader_dir("raft-lora", both)


def test_a_missing_reader_names_what_trains_it(settings):
    with pytest.raises(AssetError, match="raft.ensure_reader"):
        raft.load_reader("raft-full", settings)
    with pytest.raises(AssetError, match="Unknown reader"):
        raft.load_reader("raft-huge", settings)


def test_the_real_training_targets_leak_no_held_out_question_or_answer(tmp_path):
    settings = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path)})
    settings = settings.with_budgets(raft_phrasings=2)
    questions = load_questions()
    _, test = raft.split_questions(questions)
    examples = raft.training_examples(settings, tiny_tokenizer(), questions)
    assert len(examples) > 100 and raft.leaks(examples, test) == []
    assert {e.question_id for e in examples}.isdisjoint({q.id for q in test})


def test_the_oracle_keeps_its_retrieval_rank_and_is_placed_at_random_when_not_retrieved():
    import random

    from ragft_helpers.retrieval import RetrievedChunk

    chunks = [RetrievedChunk(f"c{n}", f"text {n}", {"source": f"{n}.md"}, 1 - n / 10) for n in range(6)]
    oracle, distractors = chunks[1], [c for c in chunks if c is not chunks[1]]
    assert raft.oracle_in_context(oracle, chunks, distractors, 3, random.Random(0)) == chunks[:3]
    missing = RetrievedChunk("gold", "gold text", {"source": "gold.md"}, 0.0)
    places = set()
    for seed in range(20):
        context = raft.oracle_in_context(missing, chunks, chunks, 3, random.Random(seed))
        assert len(context) == 3 and [c for c in context if c is not missing] == chunks[:2]
        places.add(context.index(missing))
    assert places == {0, 1, 2}


def test_the_lora_reader_trains_with_adamw_and_the_full_reader_with_adafactor_at_every_profile():
    laptop, smoke = (get_settings({"RAGFT_PROFILE": name}) for name in ("laptop", "smoke"))
    assert laptop.profile.optimizer == "adafactor" and smoke.profile.optimizer is None
    assert raft.reader_optimizer("raft-lora", laptop) == raft.ADAPTER_OPTIMIZER == "adamw_torch"
    assert raft.reader_optimizer("raft-lora", smoke) is None  # Trainer's AdamW already
    for settings in (laptop, smoke):
        assert raft.reader_optimizer("raft-full", settings) == raft.FULL_READER_OPTIMIZER == "adafactor"
        for name in raft.READERS:
            assert raft.reader_spec(name, settings)["optimizer"] == raft.reader_optimizer(name, settings)


def test_a_trained_reader_judges_its_context_before_it_answers(collection, settings):
    """raft.abstention_probability: higher where the oracle was left out than where it is in."""
    examples = raft.build_examples([question(f"q{n}") for n in range(8)], collection, None, settings)
    words = " ".join([*FILES.values(), *(e.prompt for e in examples), *(e.target for e in examples)])
    tokenizer = tiny_tokenizer(words)
    examples = raft.build_examples([question(f"q{n}") for n in range(8)], collection, tokenizer, settings)
    base = ResolvedModel(tiny_gpt2(tokenizer, n_positions=256), tokenizer,
                         Provenance("model", "tiny", "test", "-"))
    tuned = settings.with_budgets(raft_max_steps=80, raft_full_max_steps=None, raft_learning_rate=3e-3,
                                  train_batch_size=4)

    def judged(model):
        return {oracle: [raft.abstention_probability(model, tokenizer, e.prompt)
                         for e in examples if e.oracle == oracle] for oracle in (True, False)}

    before = judged(base.model)
    assert max(before[False]) < 1.5 * min(before[True])  # untrained: no judgement
    model, _, _ = raft.train_reader("raft-full", examples, tuned, base=base)
    after = judged(model)
    assert min(after[False]) > 4 * max(after[True]), after
