"""Knowledge injection by fine-tuning: training data, the leakage check, LoRA on a tiny GPT-2."""
from dataclasses import replace

import pytest
import torch

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import knowledge
from ragft_helpers.assets import Provenance, ResolvedModel
from ragft_helpers.config import PROFILES, get_settings
from ragft_helpers.finetune import CREATED_BY, finetuned_dir
from ragft_helpers.qa import Question
from tests.tiny_models import TINY_TEXT, tiny_gpt2, tiny_tokenizer


def _q(id_, type_, question="how much is a ticket ?", paraphrases=("a ticket costs four pounds .",)):
    return Question(id_, question, None if type_ == "unanswerable" else "four pounds", (),
                    ("two pounds", "seven", "nine"), (("a.md", "A"),), type_, paraphrases)


def _tiny_model(tokenizer, seed=0):
    return tiny_gpt2(tokenizer, seed=seed)


@pytest.fixture
def settings(tmp_path):
    base = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path / "cache")})
    profile = replace(PROFILES["smoke"], train_batch_size=4, block_size=16, learning_rate=3e-3,
                      train_max_steps=15, kb_train_epochs=100.0)
    return replace(base, profile=profile)


def test_augmentation_keeps_updated_paraphrases_and_drops_unanswerable_ones():
    questions = [_q("a", "single-hop", paraphrases=("fact a",)),
                 _q("u", "updated", paraphrases=("old fact",)),
                 _q("n", "unanswerable", paraphrases=("nearby fact",))]
    assert knowledge.augmentation_texts(questions) == ["fact a", "old fact"]
    assert knowledge.training_texts(["article"], questions, augmented=False) == ["article"]
    assert knowledge.training_texts(["article"], questions, augmented=True) == ["article", "fact a", "old fact"]


def test_find_leaks_reports_questions_found_verbatim_after_normalising():
    questions = [_q("leaked", "single-hop", question="How much is a Ticket?"),
                 _q("clean", "single-hop", question="When does the ferry leave?")]
    texts = ["FAQ: how much is a ticket ? Four pounds.", "The ferry leaves at seven."]
    assert knowledge.find_leaks(questions, texts) == ["leaked"]
    assert knowledge.find_leaks(questions[1:], texts) == []


def test_the_real_training_texts_do_not_contain_evaluation_questions():
    from ragft_helpers.qa import load_questions

    questions = load_questions()
    texts = knowledge.training_texts(knowledge.article_texts(), questions, augmented=True)
    assert knowledge.find_leaks(questions, texts) == []


def test_step_budget_is_epochs_over_blocks_capped_by_the_profile(settings):
    assert knowledge.kb_max_steps(4, settings) == 15  # 100 epochs of 4 blocks, capped
    small = replace(settings, profile=replace(settings.profile, kb_train_epochs=2.0))
    assert knowledge.kb_max_steps(6, small) == 3


def test_variants_are_registered_with_their_creator():
    assert {"kb-full", "kb-full-aug", "kb-lora", "kb-lora-aug"} <= set(CREATED_BY)


def test_lora_targets_follow_the_model_type():
    tokenizer = tiny_tokenizer()
    assert knowledge.lora_target_modules(_tiny_model(tokenizer)) == ["c_attn"]

    class Llama:
        class config:
            model_type = "llama"
    assert knowledge.lora_target_modules(Llama()) == ["q_proj", "v_proj"]


def test_lora_trains_few_parameters_lowers_the_loss_and_reloads(settings):
    from peft import PeftModel

    tokenizer = tiny_tokenizer()
    base = ResolvedModel(_tiny_model(tokenizer), tokenizer, Provenance("model", "tiny", "test", "-"))
    variant = knowledge.VARIANT_BY_NAME["kb-lora"]
    model, tokenizer, run = knowledge.train_variant(variant, [TINY_TEXT] * 8, settings, base=base)
    assert 0 < run.trainable_params < run.total_params
    assert run.steps == 15 and run.tokens_seen == 15 * 4 * 16
    assert run.final_loss < run.first_loss and run.peak_memory_mb > 0
    folder = knowledge.save_variant(model, tokenizer, run, settings)
    assert (folder / "adapter_config.json").is_file() and folder == finetuned_dir("kb-lora", settings)
    assert knowledge.variant_run("kb-lora", settings) == run
    reloaded = PeftModel.from_pretrained(_tiny_model(tokenizer), folder).eval()
    ids = tokenizer(TINY_TEXT, return_tensors="pt").input_ids[:, :20]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-5)


def test_full_fine_tune_saves_a_plain_model(settings):
    tokenizer = tiny_tokenizer()
    base = ResolvedModel(_tiny_model(tokenizer), tokenizer, Provenance("model", "tiny", "test", "-"))
    variant = knowledge.VARIANT_BY_NAME["kb-full"]
    model, tokenizer, run = knowledge.train_variant(variant, [TINY_TEXT] * 8, settings, base=base)
    assert run.trainable_params == run.total_params and run.final_loss < run.first_loss
    knowledge.save_variant(model, tokenizer, run, settings)
    loaded = knowledge.load_variant("kb-full", settings)
    assert loaded.provenance.name == "kb-full"
    assert knowledge.variant_run("kb-missing", settings) is None
