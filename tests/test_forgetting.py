"""The forgetting run: held-out perplexity measured while a model fine-tunes on other text."""
from dataclasses import replace

import pandas as pd
import pytest
from datasets import Dataset

import ragft_helpers  # noqa: F401  (sets the HF offline mode first)
from ragft_helpers import forgetting
from ragft_helpers.config import PROFILES, get_settings
from tests.tiny_models import one_torch_thread, tiny_gpt2, tiny_tokenizer  # noqa: F401

NARROW = "the ferry leaves the harbour at seven and returns at nine . "
OTHER = ("the island has a lighthouse , a school and a small market . "
         "a ticket costs four pounds for adults and two pounds for children . ")


@pytest.fixture
def settings(tmp_path):
    base = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path),
                         "RAGFT_PRECISION": "fp32"})
    profile = replace(PROFILES["smoke"], train_batch_size=4, micro_batch_size=None, block_size=16,
                      eval_max_tokens=64, learning_rate=3e-3, warmup_fraction=0.0,
                      forgetting_max_steps=12)
    return replace(base, profile=profile)


def test_a_model_fine_tuned_on_narrow_text_forgets_the_text_it_knew(settings):
    tokenizer = tiny_tokenizer(NARROW + OTHER)
    model = tiny_gpt2(tokenizer)
    held_out = Dataset.from_dict({"text": [OTHER * 4]})
    # first the model learns the held-out text (its "pre-training")...
    learnt = forgetting.forgetting_curve(settings.with_budgets(forgetting_max_steps=40), held_out=held_out,
                                         texts=[OTHER * 20], base=(model, tokenizer))
    assert learnt["wikitext_perplexity"].iloc[-1] < learnt["wikitext_perplexity"].iloc[0] / 2
    # ...then trains on other text only: its loss there falls, the held-out perplexity rises
    curve = forgetting.forgetting_curve(settings, held_out=held_out, texts=[NARROW * 20],
                                        base=(model, tokenizer))
    assert list(curve.columns) == forgetting.COLUMNS
    assert list(curve["step"]) == [0, 3, 6, 9, 12]  # before training and forgetting.POINTS times
    assert pd.isna(curve["kb_loss"].iloc[0]) and curve["kb_loss"].iloc[-1] < curve["kb_loss"].iloc[1]
    ends = forgetting.endpoints(curve)
    assert ends["steps"] == 12
    assert ends["base"] == pytest.approx(learnt["wikitext_perplexity"].iloc[-1], rel=1e-3)
    assert ends["ft"] > 1.5 * ends["base"]


def test_without_a_budget_of_its_own_the_run_takes_kb_fulls_steps(settings):
    assert forgetting.forgetting_steps(100, settings) == 12
    unset = settings.with_budgets(forgetting_max_steps=None, train_max_steps=7)
    assert forgetting.forgetting_steps(100, unset) == 7  # injection.kb_max_steps, capped


def test_the_curve_is_saved_so_a_rerun_trains_nothing(settings, monkeypatch):
    trained = []

    def train(*args):
        trained.append(args)
        return pd.DataFrame({"step": [0, 4], "wikitext_perplexity": [10.0, 12.0], "kb_loss": [None, 1.0]})

    monkeypatch.setattr(forgetting, "_curve", train)
    held_out = Dataset.from_dict({"text": [OTHER]})
    first = forgetting.forgetting_curve(settings, held_out=held_out, texts=[NARROW])
    again = forgetting.forgetting_curve(settings, held_out=held_out, texts=[NARROW])
    assert len(trained) == 1
    pd.testing.assert_frame_equal(again, first)
    forgetting.forgetting_curve(settings, held_out=held_out, texts=[NARROW, NARROW])  # other text
    forgetting.forgetting_curve(settings.with_budgets(forgetting_max_steps=24), held_out=held_out,
                                texts=[NARROW])  # another budget
    assert len(trained) == 3
