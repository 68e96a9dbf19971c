"""Fine-tuning with ``Trainer``: causal-LM data, precision, Trainer arguments, train and resume.

Every training run of the workbook (WikiText, the knowledge base, retrieval-augmented training)
goes through :func:`build_trainer` and :func:`train`; :func:`training_spec` names the settings
that change a training result, so a run's folder is keyed by them.
"""
from __future__ import annotations

import math
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from ragft_helpers.config import Settings
from ragft_helpers.lm import count_parameters, ensure_pad_token
from ragft_helpers.machine import PeakRSS, cpu_has_native_bf16, cpu_threads, torch_device
from ragft_helpers.wikitext import article_title

STATE_FILE = "trainer_state.json"  # what Trainer writes into every checkpoint folder
# What Trainer adds to a checkpoint only to resume mid-run: the optimizer's moments (twice the
# model's size for AdamW), the scheduler, the loss scaler and the random-number states.
RESUME_ONLY_FILES = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "rng_state*.pth")


# ---- data ----------------------------------------------------------------------------------------

def group_texts(examples: dict[str, list[list[int]]], block_size: int) -> dict[str, list[list[int]]]:
    """Concatenate the token lists of a batch and cut them into blocks of ``block_size`` tokens.

    The remainder shorter than a block is dropped (as in the Hugging Face causal-LM example);
    ``labels`` is a copy of ``input_ids`` (the model shifts them by one itself).
    """
    concatenated = {key: list(chain.from_iterable(values)) for key, values in examples.items()}
    usable = len(concatenated["input_ids"]) // block_size * block_size
    blocks = {key: [values[i:i + block_size] for i in range(0, usable, block_size)]
              for key, values in concatenated.items()}
    blocks["labels"] = [list(block) for block in blocks["input_ids"]]
    return blocks


def tokenize_and_group(dataset_dict, tokenizer, block_size: int, *, rows_are_documents: bool = False):
    """Tokenize every split (batched ``map``) and group the tokens into ``block_size`` blocks.

    Empty rows are dropped. Documents are separated by the EOS token: for WikiText it goes before
    every article heading (`` = Title = ``) except the first row; with ``rows_are_documents`` it
    follows every row. No BOS or other special tokens are added per row. As in the Hugging Face
    example, the remainder of each 1,000-row map batch shorter than a block is dropped.
    """
    eos = tokenizer.eos_token_id

    def tokenize(batch, indices):
        rows = [(text, index) for text, index in zip(batch["text"], indices) if text.strip()]
        if not rows:  # the tokenizer rejects an empty batch
            return {"input_ids": []}
        encoded = tokenizer([text for text, _ in rows], add_special_tokens=False,
                            verbose=False)["input_ids"]  # long lines are cut into blocks later
        input_ids = []
        for (text, index), ids in zip(rows, encoded):
            if rows_are_documents:
                ids = ids + [eos]
            elif index > 0 and article_title(text) is not None:
                ids = [eos] + ids
            input_ids.append(ids)
        return {"input_ids": input_ids}

    tokenized = dataset_dict.map(tokenize, batched=True, with_indices=True,
                                 remove_columns=dataset_dict["train"].column_names, desc="Tokenizing")
    return tokenized.map(group_texts, batched=True, fn_kwargs={"block_size": block_size},
                         desc=f"Grouping into blocks of {block_size} tokens")


# ---- loss on the target tokens only --------------------------------------------------------------
# A prompt of a few hundred tokens followed by a one-sentence target (labels -100 on the prompt):
# the vocabulary projection (about a fifth of SmolLM2's compute per token) and the softmax are
# needed only where the next token is a target. The model keeps only those positions
# (``logits_to_keep``, a boolean mask) and the loss is Trainer's cross-entropy over them.

def target_positions(labels):
    """Boolean mask of the positions whose next token carries a label (not -100)."""
    import torch

    scored = labels[:, 1:] != -100
    return torch.cat([scored, torch.zeros_like(scored[:, :1])], dim=1)


class TargetsOnlyCollator:
    """Wraps a collator: each batch also holds ``logits_to_keep`` (:func:`target_positions`)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        batch = self.collator(features)
        batch["logits_to_keep"] = target_positions(batch["labels"])
        return batch


def targets_only_loss(outputs, labels, num_items_in_batch=None):
    """``Trainer``'s ``compute_loss_func`` for :class:`TargetsOnlyCollator` batches: the mean
    cross-entropy of the target tokens (over the whole accumulated batch when
    ``num_items_in_batch`` is given), from logits computed at their positions only."""
    import torch.nn.functional as F

    targets = labels[:, 1:][labels[:, 1:] != -100]
    loss = F.cross_entropy(outputs.logits.float(), targets, reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else targets.numel())



# ---- precision and arguments ---------------------------------------------------------------------

def mixed_precision(precision: str, device: str) -> str | None:
    """The ``Trainer`` precision flag to set: "bf16", "fp16" or None (fp32).

    ``precision`` is ``Settings.precision``: "fp32" always trains in fp32; "bf16" asks for
    bfloat16 autocast; "auto" uses bf16 where the hardware computes it natively (CUDA GPUs that
    support it, CPUs with AVX512-BF16 or AMX), fp16 on other CUDA GPUs, else fp32. The weights and
    the optimiser stay in fp32 either way: only the matrix products run in 16 bits.
    """
    import torch

    if precision == "fp32":
        return None
    if precision == "bf16":
        return "bf16"
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device == "cpu" and cpu_has_native_bf16() else None


def training_precision(settings: Settings) -> str:
    """What training runs in on this machine with ``settings``: "bf16", "fp16" or "fp32"."""
    return mixed_precision(settings.precision, torch_device()) or "fp32"


def training_spec(settings: Settings) -> dict[str, Any]:
    """The profile budgets and settings that change what a training run produces.

    Run and model folders are keyed by a hash of this (plus the model and the data), so changing
    any of them trains anew while a re-run with the same settings reloads.
    """
    profile = settings.profile
    return {"train_max_steps": profile.train_max_steps, "train_batch_size": profile.train_batch_size,
            "micro_batch_size": profile.micro_batch_size, "block_size": profile.block_size,
            "learning_rate": profile.learning_rate, "optimizer": profile.optimizer,
            "warmup_fraction": profile.warmup_fraction, "train_max_chars": profile.train_max_chars,
            "seed": settings.seed}


def training_arguments(settings: Settings, output_dir: str | os.PathLike, **overrides):
    """``TrainingArguments`` from the profile's budgets; ``overrides`` replace any of them.

    Each optimiser step sees ``train_batch_size`` blocks, ``micro_batch_size`` per forward pass;
    the profile's ``optimizer`` replaces Trainer's default AdamW when set.
    Precision: :func:`mixed_precision` of ``settings.precision`` (``RAGFT_PRECISION``). On the CPU torch
    uses :func:`cpu_threads` threads. The validation loss is measured before the first step and every
    ``eval_steps``; a checkpoint is saved at each evaluation, and only the last is kept.
    """
    import torch
    from transformers import TrainingArguments

    profile = settings.profile
    device = torch_device()
    if device == "cpu":
        torch.set_num_threads(cpu_threads())
    max_steps = overrides.get("max_steps", profile.train_max_steps)
    eval_steps = overrides.get("eval_steps", profile.eval_steps)
    precision = mixed_precision(settings.precision, device)
    values: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=profile.train_batch_size // profile.gradient_accumulation_steps,
        gradient_accumulation_steps=profile.gradient_accumulation_steps,
        per_device_eval_batch_size=profile.train_batch_size // profile.gradient_accumulation_steps,
        learning_rate=profile.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=int(round(max_steps * profile.warmup_fraction, 6)),
        eval_strategy="steps",
        eval_steps=eval_steps,
        eval_on_start=True,
        logging_steps=max(1, eval_steps // 2),
        logging_first_step=True,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=1,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        dataloader_num_workers=0,
        report_to="none",
        seed=settings.seed,
    )
    if profile.optimizer:
        values["optim"] = profile.optimizer
    values.update(overrides)
    return TrainingArguments(**values)


def _without_log_lines(display_class):
    class Display(display_class):
        def on_train_begin(self, args, state, control, **kwargs):
            super().on_train_begin(args, state, control, **kwargs)
            tracker = getattr(self, "training_tracker", None)  # the Jupyter display
            if tracker is not None and getattr(tracker, "inner_table", None) is not None:
                tracker.inner_table = None  # no empty table of losses under the bar

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass  # the bar keeps moving; the losses stay in trainer.state.log_history

    Display.__name__ = Display.__qualname__ = f"{display_class.__name__}WithoutLogLines"
    return Display


def without_log_lines(trainer):
    """``trainer`` with its progress bar kept but no line (in Jupyter: no table row) per log.

    With ``logging_steps=1`` and no evaluation, Trainer's progress display writes one row per
    optimiser step: 60 rows per run at the laptop profile. The losses are still recorded in
    ``trainer.state.log_history`` (and :func:`measured_train` returns them) to plot instead.
    """
    from transformers.trainer_callback import ProgressCallback

    displays = [ProgressCallback]
    try:
        from transformers.utils.notebook import NotebookProgressCallback
    except ImportError:  # no IPython: Trainer uses the console display
        pass
    else:
        displays.append(NotebookProgressCallback)
    for display in displays:
        removed = trainer.pop_callback(display)
        if removed is not None:
            trainer.add_callback(_without_log_lines(type(removed)))
    return trainer


def _block_length(lm_dataset, split: str) -> int:
    if len(lm_dataset) == 0:
        raise ValueError(f"The {split} split holds less text than one block of tokens; use more text "
                         "or a smaller block_size.")
    return len(lm_dataset[0]["input_ids"])


def build_trainer(model, tokenizer, lm_datasets, settings: Settings, output_dir: str | os.PathLike,
                  **overrides):
    """A ``Trainer`` for causal-LM fine-tuning on ``lm_datasets`` (from :func:`tokenize_and_group`).

    The validation set is cut to the profile's ``eval_max_tokens`` so evaluations stay quick;
    ``overrides`` go to :func:`training_arguments`.
    """
    from transformers import DataCollatorForLanguageModeling, Trainer

    ensure_pad_token(tokenizer)
    _block_length(lm_datasets["train"], "train")
    validation = lm_datasets["validation"]
    block_size = _block_length(validation, "validation")
    eval_blocks = max(1, settings.profile.eval_max_tokens // block_size)
    validation = validation.select(range(min(len(validation), eval_blocks)))
    return Trainer(
        model=model,
        args=training_arguments(settings, output_dir, **overrides),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        train_dataset=lm_datasets["train"],
        eval_dataset=validation,
        processing_class=tokenizer,
    )


def train_and_restore_fp32(trainer, **train_kwargs):
    """``trainer.train(**train_kwargs)``, then the model's own forward back.

    Mixed-precision training wraps the model's ``forward`` in bf16/fp16 autocast and leaves it
    wrapped; unwrapped, every measurement after training (perplexity, multiple choice) runs in
    fp32 like the ones before it.
    """
    from accelerate.utils import extract_model_from_parallel

    try:
        return trainer.train(**train_kwargs)
    finally:
        extract_model_from_parallel(trainer.model, keep_fp32_wrapper=False)


def best_weights_callback(metric: str):
    """A ``TrainerCallback`` that keeps a copy of the model's weights at the evaluation with the
    lowest ``metric`` (e.g. ``"eval_validation_loss"``) in ``weights``, and that evaluation's
    epoch in ``epoch``: early stopping's choice, without saving checkpoints to disk."""
    from transformers import TrainerCallback

    class BestWeights(TrainerCallback):
        def __init__(self):
            self.lowest, self.epoch, self.weights = float("inf"), None, None

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            value = (metrics or {}).get(metric)
            if value is not None and value < self.lowest:
                self.lowest, self.epoch = value, int(round(state.epoch))
                self.weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}

    return BestWeights()


@dataclass(frozen=True)
class TrainingCost:
    """What one ``trainer.train()`` cost and how its loss moved."""

    trainable_params: int
    total_params: int
    seconds: float
    peak_memory_mb: float
    losses: list[float]  # every logged training loss, in order

    @property
    def first_loss(self) -> float:
        """The mean of the first eighth of the logged losses (at least one): one step's loss is
        one batch's, and a few examples' loss is too noisy to tell whether training worked."""
        return statistics.fmean(self.losses[:self._window])

    @property
    def final_loss(self) -> float:
        """The mean of the last eighth of the logged losses (at least one)."""
        return statistics.fmean(self.losses[-self._window:])

    @property
    def _window(self) -> int:
        return max(1, len(self.losses) // 8)


def measured_train(trainer) -> TrainingCost:
    """:func:`train_and_restore_fp32` with its time, peak memory, parameter counts and losses."""
    trainable, total = count_parameters(trainer.model)
    start = time.perf_counter()
    with PeakRSS() as memory:
        train_and_restore_fp32(trainer)
    seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return TrainingCost(trainable, total, seconds, memory.peak_mb, losses)


def _load_finished_weights(model, checkpoint: str) -> None:
    """Copy the weights saved in ``checkpoint`` into ``model`` (public API: load, then copy)."""
    finished = type(model).from_pretrained(checkpoint)
    model.load_state_dict(finished.state_dict())


def train(trainer, resume: bool = True):
    """Run ``trainer.train()``, resuming from the last checkpoint in its output folder if any.

    When that checkpoint already reached ``max_steps``, its weights and state are loaded and
    nothing is trained (``Trainer`` itself would take one more step past the end);
    ``training_loss`` is then the mean of the logged train losses. A run that reached
    ``max_steps`` keeps only its last checkpoint, with the weights and the log but none of
    :data:`RESUME_ONLY_FILES`. Afterwards the model computes in fp32 whatever precision it trained
    in (:func:`train_and_restore_fp32`).
    """
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput, get_last_checkpoint

    output_dir = trainer.args.output_dir
    checkpoint = get_last_checkpoint(output_dir) if resume and os.path.isdir(output_dir) else None
    if not checkpoint:
        output = train_and_restore_fp32(trainer)
    else:
        state = TrainerState.load_from_json(os.path.join(checkpoint, STATE_FILE))
        if state.global_step >= trainer.args.max_steps:
            print(f"Training already finished: loading {checkpoint}")
            if trainer.is_world_process_zero():
                _keep_finished_checkpoint(output_dir, checkpoint)
            _load_finished_weights(trainer.model, checkpoint)
            trainer.state = state
            losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
            return TrainOutput(state.global_step, sum(losses) / len(losses) if losses else math.nan, {})
        if not any(Path(checkpoint).glob("optimizer.*")):
            print(f"Continuing the finished run in {checkpoint} with a fresh optimizer and schedule "
                  "(their state is dropped when a run finishes)")
        else:
            print(f"Resuming from {checkpoint}")
        trainer.args.eval_on_start = False  # the checkpoint's history already has that evaluation
        output = train_and_restore_fp32(trainer, resume_from_checkpoint=checkpoint)
    if trainer.state.global_step >= trainer.args.max_steps and trainer.is_world_process_zero():
        _keep_finished_checkpoint(output_dir, get_last_checkpoint(output_dir))
    return output


def _keep_finished_checkpoint(output_dir: str | os.PathLike, last: str) -> None:
    """A finished run keeps only its ``last`` checkpoint, without what only a mid-run resume needs
    (:data:`RESUME_ONLY_FILES`): the weights and the log are enough for :func:`train` to reload
    it, and the optimizer's state alone is twice the model's size."""
    for checkpoint in Path(output_dir).glob("checkpoint-*"):
        if checkpoint.name != Path(last).name:
            shutil.rmtree(checkpoint, ignore_errors=True)  # an older run's (two were kept before)
            continue
        for pattern in RESUME_ONLY_FILES:
            for path in checkpoint.glob(pattern):
                path.unlink(missing_ok=True)


def log_history_frame(trainer):
    """One row per logged step: ``step``, ``train_loss``, ``eval_loss`` (NaN where not logged)."""
    import pandas as pd

    rows: dict[int, dict[str, float]] = {}
    for entry in trainer.state.log_history:
        row = rows.setdefault(entry["step"], {})
        if "loss" in entry:
            row["train_loss"] = entry["loss"]
        if "eval_loss" in entry:
            row["eval_loss"] = entry["eval_loss"]
    frame = pd.DataFrame([{"step": step, **row} for step, row in sorted(rows.items()) if row],
                         columns=["step", "train_loss", "eval_loss"])
    return frame.astype({"step": int, "train_loss": float, "eval_loss": float})
