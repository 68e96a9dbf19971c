"""Fine-tuning on a tiny GPT-2: data, precision, Trainer, resume, keyed run folders, perplexity, generation."""
import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from transformers import TrainerCallback

from ragft_helpers import checkpoints, finetune_wikitext, lm, machine, training, viz
from ragft_helpers.assets import AssetError
from ragft_helpers.config import PROFILES, get_settings
from tests.tiny_models import one_torch_thread, tiny_gpt2, tiny_training_settings  # noqa: F401 (autouse fixture)

SENTENCES = [
    " the ferry leaves the harbour at nine and returns at noon . \n",
    " the island has a lighthouse , a pier and a small school . \n",
    " on windy days the crossing takes longer than usual . \n",
]


def wikitext_rows(n_articles: int) -> list[str]:
    rows = []
    for index in range(n_articles):
        rows += [f" = Island {index % 3} = \n", ""] + SENTENCES + [""]
    return rows



@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(wikitext_rows(3), trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")


def tiny_model(tokenizer, seed: int = 0, **config):
    return tiny_gpt2(tokenizer, seed=seed, n_embd=64, **config)


@pytest.fixture
def settings(tmp_path):
    return tiny_training_settings(tmp_path / "cache")


@pytest.fixture
def lm_datasets(tokenizer):
    from datasets import Dataset, DatasetDict

    raw = DatasetDict({"train": Dataset.from_dict({"text": wikitext_rows(40)}),
                       "validation": Dataset.from_dict({"text": wikitext_rows(4)})})
    return training.tokenize_and_group(raw, tokenizer, block_size=16)


# ---- data ----------------------------------------------------------------------------------------

def test_group_texts_concatenates_short_documents_and_drops_the_remainder():
    examples = {"input_ids": [[1, 2], [3], [4, 5, 6]], "attention_mask": [[1, 1], [1], [1, 1, 1]]}
    blocks = training.group_texts(examples, block_size=4)
    assert blocks == {"input_ids": [[1, 2, 3, 4]], "attention_mask": [[1, 1, 1, 1]],
                      "labels": [[1, 2, 3, 4]]}
    blocks["labels"][0][0] = -100
    assert blocks["input_ids"][0][0] == 1  # labels is a copy


@pytest.mark.parametrize("input_ids, block_size, expected", [
    ([[1, 2], [3, 4], [5, 6]], 2, [[1, 2], [3, 4], [5, 6]]),
    ([[], [1, 2, 3], []], 3, [[1, 2, 3]]),
    ([[1, 2]], 3, []),
    ([[], []], 2, []),
])
def test_group_texts_edge_cases(input_ids, block_size, expected):
    blocks = training.group_texts({"input_ids": input_ids}, block_size)
    assert blocks["input_ids"] == expected
    assert blocks["labels"] == expected


def test_tokenize_and_group_drops_empty_rows_and_separates_articles(tokenizer):
    from datasets import Dataset, DatasetDict

    rows = wikitext_rows(2)
    raw = DatasetDict({"train": Dataset.from_dict({"text": rows}),
                       "validation": Dataset.from_dict({"text": ["", " \n"]})})
    n_tokens = sum(len(tokenizer(row).input_ids) for row in rows)
    grouped = training.tokenize_and_group(raw, tokenizer, block_size=4)
    assert grouped["train"].column_names == ["input_ids", "labels"]
    assert len(grouped["validation"]) == 0  # blank rows only
    flat = [t for block in grouped["train"]["input_ids"] for t in block]
    assert len(flat) == (n_tokens + 1) // 4 * 4  # one EOS, before the second article only
    second_title = tokenizer(rows[len(rows) // 2]).input_ids
    eos_at = flat.index(tokenizer.eos_token_id)
    assert flat.count(tokenizer.eos_token_id) == 1
    assert flat[eos_at + 1:eos_at + 1 + len(second_title)] == second_title
    per_row = training.tokenize_and_group(raw, tokenizer, block_size=1, rows_are_documents=True)
    non_empty = sum(1 for row in rows if row)
    assert [t for b in per_row["train"]["input_ids"] for t in b].count(tokenizer.eos_token_id) == non_empty


def test_ensure_pad_token_uses_eos_when_missing(tokenizer):
    assert lm.ensure_pad_token(tokenizer).pad_token == tokenizer.eos_token


# ---- training ------------------------------------------------------------------------------------

def test_cpu_threads_follow_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert machine.cpu_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= machine.cpu_threads() <= (os.cpu_count() or 1)


RETAINED_AFTER_TRAINING = """
import json, psutil, torch
from ragft_helpers import machine
rss = lambda: psutil.Process().memory_info().rss / 2**20
start = rss()
model = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(8)])
optimiser = torch.optim.AdamW(model.parameters())
for _ in range(5):
    model(torch.randn(2048, 512)).square().mean().backward()
    optimiser.step()
    optimiser.zero_grad()
trained = rss()
del model, optimiser
held = rss()
machine.release_freed_memory()
print(json.dumps({"grew": trained - start, "held": held - start, "after": rss() - start}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_memory_freed_after_training_goes_back_to_the_system():
    # in a fresh process: what the allocator holds depends on everything run before
    measured = json.loads(subprocess.run([sys.executable, "-c", RETAINED_AFTER_TRAINING],
                                         capture_output=True, text=True, check=True).stdout)
    assert measured["held"] > 0.5 * measured["grew"], measured  # freed, yet still resident
    assert measured["held"] - measured["after"] > 0.25 * measured["grew"], measured


def test_training_arguments_for_the_smoke_profile_on_cpu(tmp_path):
    smoke = get_settings({"RAGFT_PROFILE": "smoke"})
    args = training.training_arguments(smoke, tmp_path)
    assert args.eval_strategy == "steps"
    profile = smoke.profile
    assert (args.max_steps, args.eval_steps, args.logging_steps) == \
        (profile.train_max_steps, profile.eval_steps, max(1, profile.eval_steps // 2))
    assert args.lr_scheduler_type == "cosine" and isinstance(args.warmup_steps, int)
    assert args.save_total_limit == 1 and args.seed == 42 and args.dataloader_num_workers == 0
    if machine.torch_device() == "cpu":
        assert args.use_cpu and not args.fp16 and args.bf16 == training.cpu_has_native_bf16()
        assert torch.get_num_threads() == 1  # OMP_NUM_THREADS from the fixture
    overridden = training.training_arguments(get_settings({"RAGFT_PROFILE": "smoke"}), tmp_path,
                                             max_steps=7, learning_rate=1e-3)
    assert (overridden.max_steps, overridden.learning_rate) == (7, 1e-3)


def test_the_laptop_profile_trades_compute_for_memory(tmp_path):
    args = training.training_arguments(get_settings({"RAGFT_PROFILE": "laptop"}), tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 4)
    assert args.optim == "adafactor"


CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbugs\t\t: spectre_v1\n"


@pytest.mark.parametrize("extra, native", [("", False), ("avx512_bf16", True), ("amx_bf16 amx_tile", True)])
def test_native_bf16_is_read_from_the_cpu_flags(extra, native):
    assert training.cpu_has_native_bf16(CPUINFO.format(extra=extra)) is native


def test_mixed_precision_follows_the_setting_and_the_hardware(monkeypatch, tmp_path):
    assert training.mixed_precision("fp32", "cuda") is None
    assert training.mixed_precision("bf16", "cpu") == "bf16"
    assert training.mixed_precision("auto", "mps") is None
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert training.mixed_precision("auto", "cpu") is None  # emulated bf16 would be slower
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert training.mixed_precision("auto", "cpu") == "bf16"
    if machine.torch_device() == "cpu":
        fp32 = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_PRECISION": "fp32"})
        assert not training.training_arguments(fp32, tmp_path).bf16
        assert training.training_precision(fp32) == "fp32"
        assert training.training_precision(get_settings({"RAGFT_PRECISION": "auto"})) == "bf16"  # patched above


@pytest.mark.parametrize("optimizer, precision", [(None, "fp32"), ("adafactor", "bf16")])
def test_training_lowers_the_loss_and_the_validation_perplexity(tokenizer, settings, lm_datasets,
                                                                tmp_path, optimizer, precision):
    import matplotlib

    matplotlib.use("Agg")
    settings = replace(settings, precision=precision,
                       profile=replace(settings.profile, optimizer=optimizer))
    model = tiny_model(tokenizer)
    validation_text = wikitext_rows(4)
    before = lm.perplexity(model, tokenizer, validation_text, max_length=16, progress=False)
    trainer = training.build_trainer(model, tokenizer, lm_datasets, settings, tmp_path / "run",
                                     max_steps=20, eval_steps=10, logging_steps=2,
                                     disable_tqdm=True)
    assert len(trainer.eval_dataset) == 64 // 16  # cut to eval_max_tokens
    assert trainer.args.optim == (optimizer or "adamw_torch_fused")
    assert trainer.args.bf16 == (precision == "bf16")
    output = training.train(trainer)
    assert output.global_step == 20
    history = training.log_history_frame(trainer)
    train_losses = history["train_loss"].dropna()
    assert train_losses.iloc[0] > train_losses.iloc[-1] + 1.0
    eval_losses = history["eval_loss"].dropna()
    assert list(history.loc[history["eval_loss"].notna(), "step"]) == [0, 10, 20]
    assert eval_losses.iloc[-1] < before.mean_nll
    after = lm.perplexity(model, tokenizer, validation_text, max_length=16, progress=False)
    assert after.perplexity < before.perplexity
    # After training the model computes in fp32 again, whatever precision it trained in.
    fresh = tiny_model(tokenizer)
    fresh.load_state_dict(model.state_dict())
    ids = torch.tensor([lm_datasets["validation"][0]["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model.eval()(ids).logits, fresh.eval()(ids).logits, atol=1e-5)
    ax = viz.plot_loss_curve(history)
    assert [line.get_label() for line in ax.get_lines()] == ["train loss", "validation loss"]


class StopAt(TrainerCallback):
    """Stops training after ``step``, as an interrupted run would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


def test_train_resumes_an_interrupted_run_from_its_last_checkpoint(tokenizer, settings, lm_datasets,
                                                                   tmp_path, capsys):
    run_dir = tmp_path / "run"
    options = dict(max_steps=14, eval_steps=5, logging_steps=5, disable_tqdm=True)
    first = training.build_trainer(tiny_model(tokenizer), tokenizer, lm_datasets, settings, run_dir,
                                   **options)
    first.add_callback(StopAt(10))
    assert training.train(first).global_step == 10
    assert (run_dir / "checkpoint-10" / "optimizer.pt").is_file()  # unfinished: resumable
    second = training.build_trainer(tiny_model(tokenizer, seed=1), tokenizer, lm_datasets, settings,
                                    run_dir, **options)
    assert training.train(second).global_step == 14
    assert f"Resuming from {run_dir / 'checkpoint-10'}" in capsys.readouterr().out
    history = training.log_history_frame(second)
    assert history["step"].tolist()[:3] == [0, 1, 5]  # the first run's log is kept
    assert history.loc[history["eval_loss"].notna(), "step"].tolist() == [0, 5, 10, 14]
    # Finished: one checkpoint is left, holding the weights and the log but no optimizer state.
    assert [path.name for path in run_dir.glob("checkpoint-*")] == ["checkpoint-14"]
    assert {path.name for path in (run_dir / "checkpoint-14").iterdir()} >= {
        "model.safetensors", training.STATE_FILE}
    assert not any((run_dir / "checkpoint-14").glob("optimizer.*"))
    assert not any((run_dir / "checkpoint-14").glob("rng_state*"))
    third = training.build_trainer(tiny_model(tokenizer), tokenizer, lm_datasets, settings, run_dir,
                                   **dict(options, max_steps=16))
    assert training.train(third).global_step == 16
    assert "with a fresh optimizer" in capsys.readouterr().out


def test_train_reloads_a_finished_run_without_training(tokenizer, settings, lm_datasets, tmp_path,
                                                       capsys):
    run_dir = tmp_path / "run"
    options = dict(max_steps=6, eval_steps=3, logging_steps=3, disable_tqdm=True)
    trained = tiny_model(tokenizer)
    first = training.build_trainer(trained, tokenizer, lm_datasets, settings, run_dir, **options)
    training.train(first)
    reloaded = tiny_model(tokenizer, seed=1)
    second = training.build_trainer(reloaded, tokenizer, lm_datasets, settings, run_dir, **options)
    (run_dir / "checkpoint-3").mkdir()  # an earlier checkpoint left by an older version
    second.save_model(run_dir / "checkpoint-3")
    output = training.train(second)
    assert "Training already finished" in capsys.readouterr().out
    assert [path.name for path in run_dir.glob("checkpoint-*")] == ["checkpoint-6"]
    assert output.global_step == 6 and not (run_dir / "checkpoint-7").exists()
    for name, weights in trained.state_dict().items():
        assert torch.equal(weights, reloaded.state_dict()[name]), name
    first_history = training.log_history_frame(first)
    assert training.log_history_frame(second).equals(first_history)
    assert output.training_loss == pytest.approx(first_history["train_loss"].mean())


def test_first_and_final_loss_average_an_eighth_of_the_steps_not_one_batch():
    # one noisy last batch (4.0) does not hide that training lowered the loss
    losses = [3.0, 3.2, 2.8, 2.4, 2.0, 1.8, 1.4, 1.2, 1.0, 0.9, 0.7, 0.6, 0.5, 0.6, 0.4, 4.0]
    cost = training.TrainingCost(1, 1, 1.0, 1.0, losses)
    assert (cost.first_loss, cost.final_loss) == (pytest.approx(3.1), pytest.approx(2.2))
    assert cost.final_loss < cost.first_loss and losses[-1] > losses[0]
    few = training.TrainingCost(1, 1, 1.0, 1.0, [2.0, 1.0])
    assert (few.first_loss, few.final_loss) == (2.0, 1.0)


def test_count_parameters(tokenizer):
    model = tiny_model(tokenizer)
    trainable, total = lm.count_parameters(model)
    assert trainable == total == sum(p.numel() for p in model.parameters())
    model.transformer.wte.weight.requires_grad_(False)  # tied to lm_head: counted once
    assert lm.count_parameters(model) == (total - model.transformer.wte.weight.numel(), total)


# ---- perplexity ----------------------------------------------------------------------------------

def hand_nll(model, ids: list[int], max_length: int, stride: int) -> tuple[float, int]:
    """Sum of -log p(token) over predicted tokens, one forward pass per token, softmax by hand.

    A token at position t is predicted from the window that scores it: the first window whose end
    passes t, starting at the smallest multiple of ``stride`` with start + max_length > t; it is
    not predicted when it is that window's first token.
    """
    total, count = 0.0, 0
    for t in range(1, len(ids)):
        start = 0 if t < max_length else ((t - max_length) // stride + 1) * stride
        if start == t:
            continue
        with torch.no_grad():
            logits = model(torch.tensor([ids[start:t]])).logits[0, -1].double()
        log_probs = logits - torch.log(torch.exp(logits - logits.max()).sum()) - logits.max()
        total -= log_probs[ids[t]].item()
        count += 1
    return total, count


@pytest.mark.parametrize("max_length, stride", [(8, 8), (8, 3), (8, 1), (32, 32)])
def test_perplexity_matches_a_hand_computation(tokenizer, max_length, stride):
    model = tiny_model(tokenizer).eval()
    text = "".join(SENTENCES)
    ids = tokenizer(text).input_ids
    assert len(ids) > 24  # several windows of 8 tokens
    result = lm.perplexity(model, tokenizer, text, max_length=max_length, stride=stride,
                                 progress=False)
    total, count = hand_nll(model, ids, max_length, stride)
    assert result.n_tokens == count
    assert result.n_windows == len(lm.window_starts(len(ids), max_length, stride))
    assert result.mean_nll == pytest.approx(total / count, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)
    if stride < max_length:
        assert count == len(ids) - 1


def test_perplexity_caps_tokens_and_joins_texts(tokenizer):
    from datasets import Dataset

    model = tiny_model(tokenizer)
    dataset = Dataset.from_dict({"text": SENTENCES})
    from_dataset = lm.perplexity(model, tokenizer, dataset, max_length=8, stride=4, progress=False)
    from_text = lm.perplexity(model, tokenizer, "\n\n".join(SENTENCES), max_length=8, stride=4,
                                    progress=False)
    assert from_dataset == from_text
    capped = lm.perplexity(model, tokenizer, dataset, max_length=8, max_tokens=10, progress=False)
    assert capped.n_tokens == 10 - 2  # windows [0, 8) and [8, 10)
    assert model.training  # the model's mode is restored
    with pytest.raises(ValueError, match="stride"):
        lm.perplexity(model, tokenizer, dataset, max_length=8, stride=9)


def test_micro_batches_accumulate_to_the_same_update(tokenizer, settings, lm_datasets, tmp_path):
    """micro_batch_size trades memory for passes: one step on 8 blocks in 4 micro-batches of 2
    lands on the same weights as one step on all 8 at once (SGD and no dropout, so the update is
    the gradient itself, and fp32: bf16 rounding would differ between the two batchings)."""
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    profiles = {"whole": settings.profile, "micro": replace(settings.profile, micro_batch_size=2)}
    weights = {}
    for name, profile in profiles.items():
        run_settings = replace(settings, profile=profile, precision="fp32")
        model = tiny_model(tokenizer, **no_dropout)
        trainer = training.build_trainer(model, tokenizer, lm_datasets, run_settings, tmp_path / name,
                                         max_steps=1, eval_on_start=False, save_strategy="no",
                                         optim="sgd")
        assert trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps == 8
        trainer.train()
        weights[name] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert trainer.args.gradient_accumulation_steps == 4
    start = torch.cat([p.detach().flatten() for p in tiny_model(tokenizer).parameters()])
    step = weights["whole"] - start
    assert step.abs().max() > 1e-4  # the step changed the weights
    assert torch.allclose(weights["micro"] - start, step, atol=1e-6, rtol=1e-3)


def test_the_targets_only_loss_takes_the_step_the_full_loss_takes(tokenizer, settings, tmp_path):
    """Prompt + target examples (labels -100 on the prompt), one SGD step in two micro-batches:
    logits kept at the target positions only (TargetsOnlyCollator + targets_only_loss) land on
    the weights the model's own loss over all logits gives, and the kept logits are far fewer."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer

    ids = [tokenizer(sentence)["input_ids"] for sentence in SENTENCES * 2]
    rows = [{"input_ids": prompt + target, "attention_mask": [1] * len(prompt + target),
             "labels": [-100] * len(prompt) + target}
            for prompt, target in zip(ids, [ids[1][:3], ids[2][:2], ids[0][:4]] * 2)]
    dataset = Dataset.from_list(rows)
    run_settings = replace(settings, precision="fp32",
                           profile=replace(settings.profile, train_batch_size=6, micro_batch_size=3))
    collate = DataCollatorForSeq2Seq(lm.ensure_pad_token(tokenizer), label_pad_token_id=-100)
    batch = training.TargetsOnlyCollator(collate)(rows[:3])
    assert batch["logits_to_keep"].sum() == 3 + 2 + 4  # one position per target token
    assert batch["logits_to_keep"].sum() < batch["attention_mask"].sum() / 3
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    start = torch.cat([p.detach().flatten() for p in tiny_model(tokenizer).parameters()])
    weights = {}
    for name, options in {"all logits": {"data_collator": collate},
                          "targets only": {"data_collator": training.TargetsOnlyCollator(collate),
                                           "compute_loss_func": training.targets_only_loss}}.items():
        model = tiny_model(tokenizer, **no_dropout)
        args = training.training_arguments(run_settings, tmp_path / name, max_steps=1, optim="sgd",
                                           eval_strategy="no", eval_on_start=False,
                                           save_strategy="no", warmup_steps=0, disable_tqdm=True)
        Trainer(model=model, args=args, train_dataset=dataset, **options).train()
        weights[name] = torch.cat([p.detach().flatten() for p in model.parameters()]) - start
    assert weights["all logits"].abs().max() > 1e-4
    assert torch.allclose(weights["targets only"], weights["all logits"], atol=1e-6, rtol=1e-3)


def test_micro_batch_must_divide_the_batch():
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        replace(PROFILES["smoke"], train_batch_size=4, micro_batch_size=3)


# ---- generation, saving --------------------------------------------------------------------------

def test_generate_returns_only_the_continuation(tokenizer):
    model = tiny_model(tokenizer)
    prompts = ["the ferry leaves", "the island has"]
    greedy = lm.generate(model, tokenizer, prompts, max_new_tokens=4)
    assert len(greedy) == 2 and greedy == lm.generate(model, tokenizer, prompts, max_new_tokens=4)
    assert all(len(text.split()) <= 4 and not text.startswith(p) for text, p in zip(greedy, prompts))
    sampled = [lm.generate(model, tokenizer, prompts, max_new_tokens=6, do_sample=True,
                                 temperature=1.5, top_k=5, seed=3) for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_save_and_load_finetuned(tokenizer, settings):
    model = tiny_model(tokenizer).eval()
    path = checkpoints.save_finetuned(model, tokenizer, "tiny", settings)
    assert path == settings.cache_dir / "finetuned" / settings.profile.name / "tiny"
    assert (path / "model.safetensors").is_file()
    loaded = checkpoints.load_finetuned("tiny", settings)
    ids = torch.tensor([tokenizer("the ferry leaves").input_ids])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded.model(ids).logits)
    assert loaded.provenance.name == "tiny"


def test_load_finetuned_names_the_notebook_that_creates_it(settings):
    with pytest.raises(AssetError, match="notebook 02") as caught:
        finetune_wikitext.load_wikitext_finetuned(settings)
    assert str(checkpoints.finetuned_dir(finetune_wikitext.WIKITEXT_FINETUNED, settings)) in str(caught.value)


def test_a_changed_learning_rate_trains_anew_in_a_new_folder_and_a_rerun_reloads(tmp_path, capsys):
    """Run folders are keyed by the training settings: notebook 02's learning-rate exercise trains."""
    from tests.tiny_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tiny_gpt2(tokenizer, n_positions=128).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    settings = get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_MODEL": str(tmp_path / "model"),
                             "RAGFT_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"})
    settings = settings.with_budgets(train_max_steps=2, eval_steps=2, train_max_chars=20_000)
    first = finetune_wikitext.finetune_on_wikitext(settings)
    folder = first.trainer.args.output_dir
    assert first.train_output.global_step == 2 and "Training already finished" not in capsys.readouterr().out
    again = finetune_wikitext.finetune_on_wikitext(settings)
    assert again.trainer.args.output_dir == folder
    assert "Training already finished" in capsys.readouterr().out
    faster = finetune_wikitext.finetune_on_wikitext(settings.with_budgets(learning_rate=5e-4))
    assert faster.trainer.args.output_dir != folder
    assert "Training already finished" not in capsys.readouterr().out
    assert faster.train_output.global_step == 2
    runs = sorted(p.name for p in (tmp_path / "cache" / "runs").iterdir())
    assert len(runs) == 2 and all(p.startswith("wikitext-finetuned-model-smoke-") for p in runs)
    recorded = (tmp_path / "cache" / "runs" / runs[0] / "settings.json").read_text()
    assert '"learning_rate"' in recorded and '"model": "model"' in recorded


def test_saved_models_keep_their_keys_when_the_cache_moves(tmp_path):
    """A cache copied to another folder (or machine) reloads its models: no key holds where the
    cache, the checkout or the installed packages are."""
    from ragft_helpers import injection, raft, tasks

    here, there = (get_settings({"RAGFT_PROFILE": "smoke", "RAGFT_CACHE_DIR": str(tmp_path / name)})
                   for name in ("here", "there"))
    tickets = tasks.select(tasks.load_tickets(), "train", tasks.ORIGINAL_LABELS, 2)
    variant = injection.VARIANTS[0]
    for folder in (lambda s: raft.reader_dir("raft-lora", s),
                   lambda s: injection.variant_dir(variant, ["a text"], s),
                   lambda s: tasks.classifier_dir("minilm", tickets, tasks.ORIGINAL_LABELS, s),
                   lambda s: tasks.classifier_dir("lm-lora", tickets, tasks.ORIGINAL_LABELS, s)):
        assert folder(here).name == folder(there).name
        assert folder(here).parent != folder(there).parent
    assert checkpoints.portable_location(str(tmp_path / "here" / "models" / "m"), here) == "cache:models/m"
    # a model folder the user points at elsewhere is its own key
    assert checkpoints.portable_location("/elsewhere/m", here) == "/elsewhere/m"
    assert checkpoints.portable_location("HuggingFaceTB/SmolLM2-135M", here) == "HuggingFaceTB/SmolLM2-135M"
