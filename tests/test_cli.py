import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from ragft_helpers import checkpoints, finetune_wikitext, doctor, cli
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

    from ragft_helpers.config import Provenance

    trainer = SimpleNamespace(args=SimpleNamespace(output_dir="/runs/x", max_steps=4),
                              is_world_process_zero=lambda: main_process)
    history = pd.DataFrame({"step": [0, 1, 4], "train_loss": [float("nan"), 3.0, 2.5],
                            "eval_loss": [math.log(40.0), float("nan"), math.log(20.0)]})
    return finetune_wikitext.FinetuneRun(
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

    monkeypatch.setattr(finetune_wikitext, "finetune_on_wikitext", fake_finetune)
    monkeypatch.setattr(checkpoints, "save_finetuned", fake_save)
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
    saved = checkpoints.load_finetuned("tiny-cli", get_settings(env))
    assert saved.model.config.n_positions == block_size
    again = subprocess.run([sys.executable, "-m", "ragft_helpers.cli", *arguments], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Training already finished" in again.stdout and "step 2 of 2" in again.stdout
    assert not (tmp_path / "run" / "checkpoint-3").exists()


# ---- ragft index / ragft ask ---------------------------------------------------------------------

KB = {"ferries.md": "# Ferries\n\n## Tern Card\n\nThe Tern Card costs £25.00 a year.\n",
      "dogs.txt": "Dogs\n====\n\nDogs travel free on a lead.\n"}


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    from tests.tiny_models import tiny_gpt2, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tiny_gpt2(tokenizer, n_positions=512, n_layer=1).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    monkeypatch.setenv("RAGFT_PROFILE", "smoke")
    monkeypatch.setenv("RAGFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGFT_MODEL", str(tmp_path / "model"))
    monkeypatch.delenv("RAGFT_CHROMA_URL", raising=False)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in KB.items():
        (docs / name).write_text(text, encoding="utf-8")
    return docs


def test_index_reports_what_changed_and_a_rerun_adds_nothing(cli_env, capsys):
    assert cli.main(["index", str(cli_env), "--collection", "mine"]) == 0
    first = capsys.readouterr().out
    assert "collection 'mine'" in first and "2 added" in first and "0 unchanged" in first
    assert cli.main(["index", str(cli_env), "--collection", "mine"]) == 0
    assert "0 added, 0 updated, 0 removed, 2 unchanged" in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "No readable documents"),
])
def test_index_refuses_a_folder_without_documents(cli_env, tmp_path, capsys, make, message):
    assert cli.main(["index", str(make(tmp_path))]) == 2
    assert message in capsys.readouterr().err


def test_ask_answers_one_question_and_a_batch_with_sources(cli_env, tmp_path, capsys):
    cli.main(["index", str(cli_env), "--collection", "mine"])
    capsys.readouterr()
    assert cli.main(["ask", "How much is the Tern Card?", "--collection", "mine", "--k", "1",
                     "--threshold", "0", "--retrieval", "bm25"]) == 0
    out = capsys.readouterr().out
    assert "Q: How much is the Tern Card?" in out and "1. ferries.md > Ferries > Tern Card" in out
    assert "ms, generation" in out and "(prefill" in out and "ms, decode" in out
    assert "retriever loaded in" in out  # at start-up, outside the first answer's retrieval time
    batch = tmp_path / "q.jsonl"
    batch.write_text('{"question": "Can dogs travel?"}\n\n{"question": "Tern Card price?"}\n')
    out_file = tmp_path / "answers.jsonl"
    assert cli.main(["ask", "--questions", str(batch), "--out", str(out_file),
                     "--collection", "mine", "--threshold", "0"]) == 0
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["question"] for r in records] == ["Can dogs travel?", "Tern Card price?"]
    assert records[0]["sources"][0]["file"] == "dogs.txt"
    assert {"answer", "abstained", "retrieval_ms", "generation_ms", "prefill_ms",
            "decode_ms"} <= set(records[0])


def test_ask_abstains_below_the_threshold_without_calling_the_model(cli_env, capsys):
    cli.main(["index", str(cli_env), "--collection", "mine"])
    capsys.readouterr()
    assert cli.main(["ask", "What is the capital of France?", "--collection", "mine",
                     "--threshold", "0.99"]) == 0
    assert "[abstained]" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["ask", "Tern Card?", "--collection", "nope"], "No collection named 'nope'"),
    (["ask", "--questions", "/no/such/file.jsonl"], "no such file"),
])
def test_ask_bad_input_names_the_fix(cli_env, capsys, arguments, message):
    assert cli.main(arguments) == 2
    err = capsys.readouterr().err
    assert message in err and ("ragft index" in err or "JSON-lines" in err)


def test_ask_refuses_an_empty_question_and_a_bad_batch_line(cli_env, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["ask", "   "])
    assert exit_.value.code == 2 and "the question is empty" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "wrong key"}\n')
    cli.main(["index", str(cli_env)])
    assert cli.main(["ask", "--questions", str(bad)]) == 2
    assert 'line 1: expected a JSON object with a "question"' in capsys.readouterr().err


def test_ask_with_an_untrained_raft_reader_names_what_trains_it(cli_env, capsys):
    cli.main(["index", str(cli_env)])
    capsys.readouterr()
    assert cli.main(["ask", "Tern Card?", "--reader", "raft"]) == 2
    captured = capsys.readouterr()
    assert "raft.ensure_reader" in captured.err
    assert "retriever loaded" not in captured.out  # the error comes before any loading


def test_ask_uses_a_trained_raft_reader(cli_env, monkeypatch, capsys):
    from ragft_helpers import assets, raft

    loaded = []

    def fake_reader(name, settings=None):
        loaded.append(name)
        return assets.load_causal_lm(settings, verbose=False)

    monkeypatch.setattr(raft, "load_reader", fake_reader)
    cli.main(["index", str(cli_env)])
    assert cli.main(["ask", "Tern Card?", "--reader", "raft", "--threshold", "0"]) == 0
    assert loaded == [raft.CHAT_READER] and "Q: Tern Card?" in capsys.readouterr().out
