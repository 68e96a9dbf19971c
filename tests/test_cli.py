import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from ragft_helpers import cli, doctor, finetune
from ragft_helpers.config import PROFILES, get_settings


def test_doctor_passes_on_a_prepared_machine(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for item in ("language model", "embedding model", "wikitext", "device", "profile"):
        assert item in out


def test_doctor_fails_with_a_fix_for_each_problem(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RAGFT_WIKITEXT_DIR", str(tmp_path / "missing"))
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FIX] wikitext" in out and "unset RAGFT_WIKITEXT_DIR" in out


def test_doctor_reports_an_invalid_profile_instead_of_crashing(monkeypatch):
    monkeypatch.setenv("RAGFT_PROFILE", "turbo")
    checks = doctor.run_checks()
    assert [c.ok for c in checks] == [False] and "smoke" in checks[0].fix


# ---- ragft finetune --------------------------------------------------------------------------------

def fake_run(*, main_process: bool = True):
    """What ``finetune_on_wikitext`` returns, with just the fields the command reads."""
    import pandas as pd
    from transformers.trainer_utils import TrainOutput

    from ragft_helpers.assets import Provenance

    trainer = SimpleNamespace(args=SimpleNamespace(output_dir="/runs/x", max_steps=4),
                              is_world_process_zero=lambda: main_process)
    history = pd.DataFrame({"step": [0, 1, 4], "train_loss": [float("nan"), 3.0, 2.5],
                            "eval_loss": [math.log(40.0), float("nan"), math.log(20.0)]})
    return finetune.FinetuneRun(
        model="MODEL", tokenizer="TOKENIZER", trainer=trainer,
        train_output=TrainOutput(4, 2.75, {}), history=history,
        provenance=[Provenance("model", "tiny", "local folder", "/m"),
                    Provenance("dataset", "wikitext", "fallback", "/d")],
        seconds=1.0, wikitext=None, lm_datasets=None)


@pytest.fixture
def calls(monkeypatch):
    """Record the calls ``ragft finetune`` makes instead of training and saving."""
    recorded = {"saved": []}

    def fake_finetune(settings, output_dir=None, *, resume=True, max_steps=None):
        recorded.update(settings=settings, output_dir=output_dir, resume=resume, max_steps=max_steps)
        return recorded.get("run") or fake_run()

    def fake_save(model, tokenizer, name, settings=None):
        recorded["saved"].append((model, tokenizer, name))
        return settings.cache_dir / "finetuned" / name

    monkeypatch.setattr(finetune, "finetune_on_wikitext", fake_finetune)
    monkeypatch.setattr(finetune, "save_finetuned", fake_save)
    return recorded


def test_finetune_passes_its_options_to_the_training_entry_point(calls, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RAGFT_PROFILE", "smoke")
    monkeypatch.setenv("RAGFT_CACHE_DIR", str(tmp_path))
    assert cli.main(["finetune", "--output-dir", str(tmp_path / "run"), "--max-steps", "4",
                     "--no-resume", "--save-as", "my-model"]) == 0
    assert calls["settings"].profile.name == "smoke"
    assert (str(calls["output_dir"]), calls["resume"], calls["max_steps"]) == \
        (str(tmp_path / "run"), False, 4)
    assert calls["saved"] == [("MODEL", "TOKENIZER", "my-model")]
    out = capsys.readouterr().out
    assert "model: tiny (local folder)" in out and "dataset: wikitext (fallback)" in out
    assert "step 4 of 4" in out and "/runs/x" in out
    assert "train loss (mean over the steps of this run): 2.7500" in out
    assert "perplexity 40.0 -> 20.0" in out
    assert str(tmp_path / "finetuned" / "my-model") in out


def test_finetune_defaults_resume_and_use_the_profile_budget(calls, monkeypatch):
    monkeypatch.setenv("RAGFT_PROFILE", "laptop")
    assert cli.main(["finetune"]) == 0
    assert (calls["output_dir"], calls["resume"], calls["max_steps"]) == (None, True, None)
    assert calls["settings"].profile.name == "laptop" and calls["saved"] == []


def test_finetune_prints_and_saves_only_on_the_main_process(calls, capsys):
    calls["run"] = fake_run(main_process=False)
    assert cli.main(["finetune", "--save-as", "my-model"]) == 0
    assert calls["saved"] == [] and capsys.readouterr().out == ""


@pytest.mark.parametrize("argv, message", [
    (["--max-steps", "0"], "whole number of steps >= 1"),
    (["--max-steps", "ten"], "whole number of steps >= 1"),
    (["--save-as", "../elsewhere"], "not a plain name"),
    (["--save-as", "a/b"], "not a plain name"),
])
def test_finetune_rejects_bad_options_before_training(calls, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["finetune", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err and "settings" not in calls


def test_finetune_reports_a_bad_profile_as_an_error(calls, monkeypatch, capsys):
    monkeypatch.setenv("RAGFT_PROFILE", "turbo")
    assert cli.main(["finetune"]) == 2
    assert "RAGFT_PROFILE='turbo'" in capsys.readouterr().err and "settings" not in calls


def test_finetune_end_to_end_on_two_processes_with_torchrun(tmp_path):
    """Real training of a tiny model (RAGFT_MODEL) by 2 CPU processes: the summary is printed once,
    the checkpoint and the saved model load; a rerun finds the run finished and trains nothing."""
    from tests.tiny_models import tiny_gpt2, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    block_size = PROFILES["smoke"].block_size
    tiny_gpt2(tokenizer, n_positions=block_size).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    env = {**os.environ, "RAGFT_PROFILE": "smoke", "RAGFT_MODEL": str(tmp_path / "model"),
           "RAGFT_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    arguments = ["finetune", "--max-steps", "2", "--output-dir", str(tmp_path / "run"),
                 "--save-as", "tiny-cli"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "-m", "ragft_helpers.cli", *arguments], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("train loss (mean over the steps of this run)") == 1
    assert "step 2 of 2" in done.stdout
    assert (tmp_path / "run" / "checkpoint-2" / "trainer_state.json").is_file()
    saved = finetune.load_finetuned("tiny-cli", get_settings(env))
    assert saved.model.config.n_positions == block_size
    again = subprocess.run([sys.executable, "-m", "ragft_helpers.cli", *arguments], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Training already finished" in again.stdout and "step 2 of 2" in again.stdout
    assert not (tmp_path / "run" / "checkpoint-3").exists()
