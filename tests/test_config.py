from pathlib import Path

import pytest

from ragft_helpers.config import (
    PROFILES, ConfigError, ensure_writable_dir, get_profile, get_settings, set_seed,
)


def test_default_profile_is_laptop():
    assert get_settings({}).profile.name == "laptop"


@pytest.mark.parametrize("raw", ["smoke", " SMOKE ", "Smoke"])
def test_profile_names_are_case_and_space_insensitive(raw):
    assert get_settings({"RAGFT_PROFILE": raw}).profile.name == "smoke"


def test_unknown_profile_names_the_allowed_values():
    with pytest.raises(ConfigError) as err:
        get_settings({"RAGFT_PROFILE": "turbo"})
    message = str(err.value)
    assert "turbo" in message
    for name in PROFILES:
        assert name in message


def test_profiles_only_change_budgets():
    smoke, laptop, full = (get_profile(n) for n in ("smoke", "laptop", "full"))
    assert smoke.train_max_steps < laptop.train_max_steps < full.train_max_steps
    assert smoke.eval_max_tokens < laptop.eval_max_tokens < full.eval_max_tokens
    assert set(vars(smoke)) == set(vars(full))


def test_environment_variables_are_read():
    settings = get_settings({
        "RAGFT_MODEL": "my/model", "RAGFT_CACHE_DIR": "/tmp/x", "RAGFT_WIKITEXT_DIR": "/data/wt",
        "RAGFT_SEED": "7", "RAGFT_CHROMA_URL": "http://127.0.0.1:8000", "RAGFT_PRECISION": " BF16",
    })
    assert settings.model == "my/model"
    assert settings.cache_dir == Path("/tmp/x")
    assert settings.wikitext_dir == Path("/data/wt")
    assert settings.seed == 7
    assert settings.chroma_url == "http://127.0.0.1:8000"
    assert settings.precision == "bf16"


def test_defaults_when_unset():
    settings = get_settings({"XDG_CACHE_HOME": "/c"})
    assert settings.model is None and settings.wikitext_dir is None
    assert settings.cache_dir == Path("/c/ragft")
    assert settings.seed == 42
    assert settings.precision == "auto"


def test_bad_seed_says_what_to_set():
    with pytest.raises(ConfigError, match="RAGFT_SEED='abc'.*whole number"):
        get_settings({"RAGFT_SEED": "abc"})


def test_bad_precision_names_the_allowed_values():
    with pytest.raises(ConfigError, match="RAGFT_PRECISION='fp16'.*auto, fp32, bf16"):
        get_settings({"RAGFT_PRECISION": "fp16"})


def test_the_notice_date_and_supersede_mode_are_read_and_checked():
    from datetime import date

    settings = get_settings({"RAGFT_AS_OF": " 2025-03-01 ", "RAGFT_SUPERSEDE": "Demote"})
    assert settings.as_of == date(2025, 3, 1) and settings.supersede == "demote"
    defaults = get_settings({})
    assert defaults.as_of is None and defaults.supersede == "rewrite"  # None: today
    with pytest.raises(ConfigError, match="RAGFT_AS_OF='1 March'.*YYYY-MM-DD"):
        get_settings({"RAGFT_AS_OF": "1 March"})
    with pytest.raises(ConfigError, match="RAGFT_SUPERSEDE='drop'.*none, rewrite, demote, article"):
        get_settings({"RAGFT_SUPERSEDE": "drop"})


def test_unwritable_cache_dir_names_folder_and_variable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError) as err:
        ensure_writable_dir(blocker / "cache")
    assert str(blocker / "cache") in str(err.value)
    assert "RAGFT_CACHE_DIR" in str(err.value)


def test_set_seed_makes_torch_and_numpy_repeatable():
    import numpy as np
    import torch

    set_seed(3)
    first = (np.random.rand(), torch.rand(1).item())
    set_seed(3)
    assert (np.random.rand(), torch.rand(1).item()) == first
