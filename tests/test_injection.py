"""Knowledge injection by fine-tuning: training data, the leakage check, LoRA on a tiny GPT-2."""
from dataclasses import replace

import pytest
import torch

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import injection
from ragft_helpers.assets import AssetError, ResolvedModel
from ragft_helpers.config import PROFILES, Provenance, get_settings
from ragft_helpers.qa import Question, load_questions
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
    assert injection.augmentation_texts(questions) == ["fact a", "old fact"]
    assert injection.training_texts(["article"], questions, augmented=False) == ["article"]
    assert injection.training_texts(["article"], questions, augmented=True) == ["article", "fact a", "old fact"]


def test_find_leaks_reports_questions_found_verbatim_after_normalising():
    questions = [_q("leaked", "single-hop", question="How much is a Ticket?"),
                 _q("clean", "single-hop", question="When does the ferry leave?")]
    texts = ["FAQ: how much is a ticket ? Four pounds.", "The ferry leaves at seven."]
    assert injection.find_leaks(questions, texts) == ["leaked"]
    assert injection.find_leaks(questions[1:], texts) == []


def test_the_real_training_texts_do_not_contain_evaluation_questions():
    from ragft_helpers.qa import load_questions

    questions = load_questions()
    texts = injection.training_texts(injection.article_texts(), questions, augmented=True)
    assert injection.find_leaks(questions, texts) == []


def test_step_budget_is_epochs_over_blocks_capped_by_the_profile(settings):
    assert injection.kb_max_steps(4, settings) == 15  # 100 epochs of 4 blocks, capped
    small = replace(settings, profile=replace(settings.profile, kb_train_epochs=2.0))
    assert injection.kb_max_steps(6, small) == 3


def real_texts(variant):
    return injection.training_texts(injection.article_texts(), load_questions(), variant.augmented)


def test_a_missing_variant_names_what_creates_it(settings):
    with pytest.raises(AssetError, match="notebook 05"):
        injection.load_variant("kb-full", settings)
    with pytest.raises(AssetError, match="Unknown variant"):
        injection.variant_run("kb-nonsense", settings)


def test_variant_folders_are_keyed_by_the_settings_that_change_the_weights(settings):
    lora, full = injection.VARIANT_BY_NAME["kb-lora"], injection.VARIANT_BY_NAME["kb-full"]
    texts = real_texts(lora)
    folder = injection.variant_dir(lora, texts, settings)
    assert folder.name.startswith("kb-lora-") and folder == injection.variant_dir(lora, texts, settings)
    for changed in (settings.with_budgets(lora_rank=4), settings.with_budgets(learning_rate=5e-4),
                    settings.with_budgets(kb_train_epochs=1.0)):
        assert injection.variant_dir(lora, texts, changed) != folder
    assert injection.variant_dir(lora, texts[:-1], settings) != folder  # other training data
    # the LoRA rank does not change a full fine-tune
    assert (injection.variant_dir(full, texts, settings.with_budgets(lora_rank=4))
            == injection.variant_dir(full, texts, settings))


def test_lora_targets_follow_the_model_type():
    tokenizer = tiny_tokenizer()
    assert injection.lora_target_modules(_tiny_model(tokenizer)) == ["c_attn"]

    class Llama:
        class config:
            model_type = "llama"
    assert injection.lora_target_modules(Llama()) == ["q_proj", "v_proj"]


def test_lora_trains_few_parameters_lowers_the_loss_and_reloads(settings):
    from peft import PeftModel

    tokenizer = tiny_tokenizer()
    base = ResolvedModel(_tiny_model(tokenizer), tokenizer, Provenance("model", "tiny", "test", "-"))
    variant = injection.VARIANT_BY_NAME["kb-lora"]
    model, tokenizer, run = injection.train_variant(variant, [TINY_TEXT] * 8, settings, base=base)
    assert 0 < run.trainable_params < run.total_params
    assert run.steps == 15 and run.tokens_seen == 15 * 4 * 16
    assert run.final_loss < run.first_loss and run.peak_memory_mb > 0
    texts = real_texts(variant)
    folder = injection.save_variant(model, tokenizer, run, injection.variant_dir(variant, texts, settings),
                                    injection.variant_spec(variant, texts, settings))
    assert (folder / "adapter_config.json").is_file() and (folder / "settings.json").is_file()
    assert injection.variant_run("kb-lora", settings) == run
    assert injection.variant_run("kb-lora", settings.with_budgets(lora_rank=4)) is None
    reloaded = PeftModel.from_pretrained(_tiny_model(tokenizer), folder).eval()
    ids = tokenizer(TINY_TEXT, return_tensors="pt").input_ids[:, :20]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-5)


def test_full_fine_tune_saves_a_plain_model(settings):
    tokenizer = tiny_tokenizer()
    base = ResolvedModel(_tiny_model(tokenizer), tokenizer, Provenance("model", "tiny", "test", "-"))
    variant = injection.VARIANT_BY_NAME["kb-full"]
    model, tokenizer, run = injection.train_variant(variant, [TINY_TEXT] * 8, settings, base=base)
    assert run.trainable_params == run.total_params and run.final_loss < run.first_loss
    texts = real_texts(variant)
    injection.save_variant(model, tokenizer, run, injection.variant_dir(variant, texts, settings),
                           injection.variant_spec(variant, texts, settings))
    loaded = injection.load_variant("kb-full", settings)
    assert loaded.provenance.name == "kb-full"
    assert injection.variant_run("kb-full-aug", settings) is None


def test_the_scratch_control_starts_from_random_weights_with_kb_full_budget(settings):
    tokenizer = tiny_tokenizer()
    base = ResolvedModel(_tiny_model(tokenizer), tokenizer, Provenance("model", "tiny", "test", "-"))
    full = injection.VARIANT_BY_NAME["kb-full"]
    fitted = injection.train_variant(full, [TINY_TEXT] * 8, settings, base=base)[2]  # trains base in place
    _, _, run = injection.train_variant(injection.SCRATCH, [TINY_TEXT] * 8, settings, base=base)
    assert run.steps == fitted.steps and run.tokens_seen == fitted.tokens_seen  # the same budget
    # it did not start from the fitted weights: its first loss is back near an untrained model's
    assert run.first_loss - fitted.final_loss > 0.5 * (fitted.first_loss - fitted.final_loss)
    assert run.final_loss < run.first_loss  # and it learns
    texts = real_texts(full)
    assert injection.variant_dir(injection.SCRATCH, texts, settings) != injection.variant_dir(full, texts, settings)
    assert "kb-full-scratch" not in [v.name for v in injection.VARIANTS]  # notebook 05 does not train it


def test_every_step_loss_is_kept_and_no_line_is_printed_per_step(settings, capsys):
    tokenizer = tiny_tokenizer()
    base = ResolvedModel(_tiny_model(tokenizer), tokenizer, Provenance("model", "tiny", "test", "-"))
    capsys.readouterr()
    _, _, run = injection.train_variant(injection.VARIANT_BY_NAME["kb-full"], [TINY_TEXT] * 8,
                                        settings, base=base)
    assert len(run.losses) == run.steps == 15
    # first and final: the means of the first and last eighth of the steps (15 // 8 = 1 step)
    assert (run.losses[0], run.losses[-1]) == (run.first_loss, run.final_loss)
    assert "'loss'" not in capsys.readouterr().out  # the progress bar writes no line per step


def test_a_run_saved_before_losses_were_recorded_still_loads():
    recorded = {"name": "kb-full", "lora": False, "augmented": False, "trainable_params": 1,
                "total_params": 1, "steps": 2, "tokens_seen": 8, "train_seconds": 1.0,
                "peak_memory_mb": 1.0, "final_loss": 2.0, "first_loss": 3.0, "training_rows": 1}
    assert injection.KnowledgeRun(**recorded).losses == []


def test_wrapping_lora_shows_peft_no_deprecation_warning_and_hides_no_other():
    import warnings

    from ragft_helpers.checkpoints import peft_deprecation_hidden

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        injection.wrap_lora(_tiny_model(tiny_tokenizer()), 2)
    with pytest.warns(FutureWarning, match="another"), peft_deprecation_hidden():
        warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)
        warnings.warn("another deprecation", FutureWarning)
