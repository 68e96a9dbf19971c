"""Fine-tune a causal LM on WikiText with ``Trainer`` and measure it: loss curve, perplexity, samples.

``finetune_on_wikitext`` is the one entry point (notebook 02 and ``ragft finetune``); the other
functions are its steps, each usable on its own.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Iterable

from ragft_helpers.assets import (AssetError, Provenance, ResolvedModel, load_causal_lm,
                                  save_checkpoint)
from ragft_helpers.config import Settings, get_settings, set_seed
from ragft_helpers.wikitext import article_title, load_wikitext

WIKITEXT_FINETUNED = "wikitext-finetuned"
CREATED_BY = {WIKITEXT_FINETUNED: "notebook 02 (fine-tuning on WikiText)"}
SOURCE_FINETUNED = "fine-tuned copy in RAGFT_CACHE_DIR"


# ---- data ----------------------------------------------------------------------------------------

def ensure_pad_token(tokenizer):
    """Give the tokenizer a pad token (the EOS token) when it has none, as GPT-2's tokenizer.

    The data collator pads every batch to one length and sets the labels of padding to -100, so
    padding is ignored by the loss; for that it needs a pad token. Reusing EOS adds no new
    embedding row. One consequence: the collator also sets the labels of real EOS tokens to -100.
    Training blocks are full length, so nothing is padded and only the EOS separators between
    articles go unscored.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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


# ---- training ------------------------------------------------------------------------------------

def training_device() -> str:
    """Where ``Trainer`` will run: "cuda", "mps" or "cpu"."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_threads() -> int:
    """Threads for torch on the CPU: ``OMP_NUM_THREADS`` when set, else the cores this process may use."""
    configured = os.environ.get("OMP_NUM_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """The CPU computes in bfloat16 natively (AVX512-BF16 or AMX), per ``/proc/cpuinfo``'s flags.

    Elsewhere (no such flags, or not Linux) bf16 on the CPU is emulated and slower than fp32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


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
    return mixed_precision(settings.precision, training_device()) or "fp32"


def training_arguments(settings: Settings, output_dir: str | os.PathLike, **overrides):
    """``TrainingArguments`` from the profile's budgets; ``overrides`` replace any of them.

    Each optimiser step sees ``train_batch_size`` blocks, ``micro_batch_size`` per forward pass;
    the profile's ``optimizer`` replaces Trainer's default AdamW when set.
    Precision: :func:`mixed_precision` of ``settings.precision`` (``RAGFT_PRECISION``). On the CPU torch
    uses :func:`cpu_threads` threads. The validation loss is measured before the first step and every
    ``eval_steps``; a checkpoint is saved at each evaluation, and the last two are kept.
    """
    import torch
    from transformers import TrainingArguments

    profile = settings.profile
    device = training_device()
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
        warmup_steps=max_steps // 20,
        eval_strategy="steps",
        eval_steps=eval_steps,
        eval_on_start=True,
        logging_steps=max(1, eval_steps // 2),
        logging_first_step=True,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
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


def train(trainer, resume: bool = True):
    """Run ``trainer.train()``, resuming from the last checkpoint in its output folder if any.

    When that checkpoint already reached ``max_steps``, its weights and state are loaded and
    nothing is trained (``Trainer`` itself would take one more step past the end);
    ``training_loss`` is then the mean of the logged train losses. Afterwards the model computes
    in fp32 whatever precision it trained in (:func:`train_and_restore_fp32`).
    """
    from transformers import TrainerState
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import TrainOutput, get_last_checkpoint

    output_dir = trainer.args.output_dir
    checkpoint = get_last_checkpoint(output_dir) if resume and os.path.isdir(output_dir) else None
    if not checkpoint:
        return train_and_restore_fp32(trainer)
    state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    if state.global_step >= trainer.args.max_steps:
        print(f"Training already finished: loading {checkpoint}")
        trainer._load_from_checkpoint(checkpoint)
        trainer.state = state
        losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
        return TrainOutput(state.global_step, sum(losses) / len(losses) if losses else math.nan, {})
    print(f"Resuming from {checkpoint}")
    trainer.args.eval_on_start = False  # the checkpoint's history already has that evaluation
    return train_and_restore_fp32(trainer, resume_from_checkpoint=checkpoint)


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


def plot_loss_curve(history, ax=None):
    """Train and validation loss against the optimiser step; returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    train_rows = history.dropna(subset=["train_loss"])
    eval_rows = history.dropna(subset=["eval_loss"])
    ax.plot(train_rows["step"], train_rows["train_loss"], label="train loss")
    ax.plot(eval_rows["step"], eval_rows["eval_loss"], marker="o", label="validation loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (mean token NLL, nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once."""
    parameters = list(model.parameters())
    return (sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters))


# ---- evaluation ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float  # exp(mean_nll)
    mean_nll: float  # mean negative log-likelihood per predicted token, nats
    n_tokens: int  # tokens predicted, each once
    n_windows: int  # forward passes


def _joined_text(texts_or_dataset) -> str:
    if isinstance(texts_or_dataset, str):
        return texts_or_dataset
    if hasattr(texts_or_dataset, "column_names"):
        texts_or_dataset = texts_or_dataset["text"]
    return "\n\n".join(texts_or_dataset)


def window_starts(n_tokens: int, max_length: int, stride: int) -> list[int]:
    """Start offsets of the sliding windows; the last window reaches the end of the text."""
    starts = []
    for begin in range(0, n_tokens, stride):
        starts.append(begin)
        if begin + max_length >= n_tokens:
            break
    return starts


def perplexity(model, tokenizer, texts_or_dataset, *, max_length: int, stride: int | None = None,
               max_tokens: int | None = None, progress: bool = True) -> PerplexityResult:
    """Perplexity by the sliding-window method of the transformers perplexity guide.

    The texts are joined with blank lines and tokenized; the first ``max_tokens`` tokens are
    scored. Windows of ``max_length`` tokens start every ``stride`` tokens; tokens that an earlier
    window already scored are context only (label -100). A window's first token has no context
    in it, so it is predicted only when an earlier window covers it: with ``stride < max_length``
    every token but the text's first is predicted, with ``stride == max_length`` every token but
    each window's first. The summed NLL is divided by the exact count of predicted tokens.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    stride = stride or max_length
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in 1..max_length ({max_length}), got {stride}")
    # verbose=False: no "longer than the maximum sequence length" warning; the windows keep each
    # forward pass within max_length.
    input_ids = tokenizer(_joined_text(texts_or_dataset), return_tensors="pt", verbose=False).input_ids
    if max_tokens is not None:
        input_ids = input_ids[:, :max_tokens]
    n_tokens = input_ids.size(1)
    if n_tokens < 2:
        raise ValueError("Perplexity needs at least 2 tokens of text.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll_sum, predicted, scored_until = 0.0, 0, 0
    starts = window_starts(n_tokens, max_length, stride)
    try:
        with torch.no_grad():
            for begin in tqdm(starts, desc="Perplexity", disable=not progress):
                end = min(begin + max_length, n_tokens)
                window = input_ids[:, begin:end].to(device)
                labels = window.clone()
                labels[:, : scored_until - begin] = -100  # scored by an earlier window
                logits = model(window).logits[:, :-1].float()
                targets = labels[:, 1:]  # position i predicts token i + 1
                nll_sum += F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                           ignore_index=-100, reduction="sum").item()
                predicted += int((targets != -100).sum())
                scored_until = end
    finally:
        model.train(was_training)
    mean_nll = nll_sum / predicted
    return PerplexityResult(math.exp(mean_nll), mean_nll, predicted, len(starts))


def validation_perplexity(model, tokenizer, wikitext, settings: Settings | None = None,
                          *, progress: bool = True) -> PerplexityResult:
    """Perplexity on the validation split with the profile's budgets (block_size, eval_stride,
    eval_max_tokens)."""
    profile = (settings or get_settings()).profile
    return perplexity(model, tokenizer, wikitext["validation"], max_length=profile.block_size,
                      stride=profile.eval_stride, max_tokens=profile.eval_max_tokens,
                      progress=progress)


# ---- generation ----------------------------------------------------------------------------------

def generate(model, tokenizer, prompts: str | Iterable[str], *, max_new_tokens: int,
             do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None) -> list[str]:
    """The continuation (prompt excluded) of each prompt; greedy unless ``do_sample``.

    With ``seed``, the generator is re-seeded before each prompt, so a sample does not depend on
    the prompts before it.
    """
    import torch

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                               "pad_token_id": tokenizer.eos_token_id if tokenizer.pad_token_id is None
                               else tokenizer.pad_token_id}
    if do_sample:
        sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        options.update({key: value for key, value in sampling.items() if value is not None})
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    continuations = []
    try:
        with torch.no_grad():
            for prompt in prompts:
                if seed is not None:
                    torch.manual_seed(seed)
                encoded = tokenizer(prompt, return_tensors="pt").to(device)
                output = model.generate(**encoded, **options)
                new_tokens = output[0, encoded["input_ids"].size(1):]
                continuations.append(tokenizer.decode(new_tokens, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return continuations


# ---- saving --------------------------------------------------------------------------------------

def finetuned_dir(name: str, settings: Settings | None = None) -> Path:
    """``RAGFT_CACHE_DIR/finetuned/<profile>/<name>``: one folder per profile, so a model trained
    on the smoke budget is never taken for the laptop one."""
    settings = settings or get_settings()
    return settings.cache_dir / "finetuned" / settings.profile.name / name


def save_finetuned(model, tokenizer, name: str, settings: Settings | None = None) -> Path:
    """Save model (safetensors) and tokenizer to ``RAGFT_CACHE_DIR/finetuned/<profile>/<name>``.

    Written to a staging folder first and renamed, so an interrupted save leaves no half model.
    """
    return save_checkpoint(model, tokenizer, finetuned_dir(name, settings))


def load_finetuned(name: str, settings: Settings | None = None) -> ResolvedModel:
    """Load a model saved by :func:`save_finetuned`; a clear error names what creates it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = finetuned_dir(name, settings)
    if not (folder / "config.json").is_file():
        creator = CREATED_BY.get(name)
        how = (f"Run {creator} first: it saves the model there" if creator else
               f"Create it with save_finetuned(model, tokenizer, {name!r}, settings)")
        raise AssetError(f"No fine-tuned model {name!r} in {folder}. {how} (with the same "
                         "RAGFT_CACHE_DIR).")
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    model.eval()
    provenance = Provenance("model", name, SOURCE_FINETUNED, str(folder))
    return ResolvedModel(model, tokenizer, provenance, time.perf_counter() - start)


# ---- the entry point -----------------------------------------------------------------------------

@dataclass
class FinetuneRun:
    model: Any
    tokenizer: Any
    trainer: Any
    train_output: Any  # transformers TrainOutput
    history: Any  # pandas DataFrame from log_history_frame
    provenance: list[Provenance]  # the model, then the dataset
    seconds: float
    wikitext: Any  # the raw DatasetDict (text rows)
    lm_datasets: Any  # the tokenized, grouped DatasetDict


def default_run_dir(settings: Settings, model_name: str) -> Path:
    """Checkpoint folder of a WikiText run, one per model and profile, so resuming never mixes them."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", model_name)
    return settings.cache_dir / "runs" / f"{WIKITEXT_FINETUNED}-{slug}-{settings.profile.name}"


def finetune_on_wikitext(settings: Settings | None = None, output_dir: str | os.PathLike | None = None,
                         *, resume: bool = True, max_steps: int | None = None) -> FinetuneRun:
    """Load the model and WikiText, tokenize into blocks, train with ``Trainer``, return it all.

    Checkpoints go to ``output_dir`` (default :func:`default_run_dir`); with ``resume`` a rerun
    continues from the last one, or just reloads it when training had finished. ``max_steps``
    replaces the profile's ``train_max_steps``.
    """
    settings = settings or get_settings()
    start = time.perf_counter()
    set_seed(settings.seed)
    resolved = load_causal_lm(settings)
    wikitext, dataset_provenance = load_wikitext(settings)
    tokenizer = ensure_pad_token(resolved.tokenizer)
    lm_datasets = tokenize_and_group(wikitext, tokenizer, settings.profile.block_size)
    output_dir = output_dir or default_run_dir(settings, resolved.provenance.name)
    overrides = {} if max_steps is None else {"max_steps": max_steps}
    trainer = build_trainer(resolved.model, tokenizer, lm_datasets, settings, output_dir, **overrides)
    train_output = train(trainer, resume=resume)
    resolved.model.eval()
    return FinetuneRun(resolved.model, tokenizer, trainer, train_output, log_history_frame(trainer),
                       [resolved.provenance, dataset_provenance], time.perf_counter() - start,
                       wikitext, lm_datasets)
