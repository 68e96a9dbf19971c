"""Fine-tune the causal LM on WikiText: notebook 02 and ``ragft finetune`` in one entry point."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragft_helpers.assets import ResolvedModel, load_causal_lm
from ragft_helpers.checkpoints import keyed_dir, load_finetuned, portable_location, write_settings
from ragft_helpers.config import Provenance, Settings, get_settings, set_seed
from ragft_helpers.lm import ensure_pad_token
from ragft_helpers.training import (build_trainer, log_history_frame, tokenize_and_group, train,
                                    training_spec)
from ragft_helpers.wikitext import SOURCE_FOLDER, folder_key, load_wikitext

WIKITEXT_FINETUNED = "wikitext-finetuned"
HOW_TO_CREATE = ("Run notebook 02 (fine-tuning on WikiText) or `ragft finetune --save-as "
                 f"{WIKITEXT_FINETUNED}` first: it saves the model there")


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


def dataset_key(dataset: Provenance, settings: Settings) -> str:
    """Where ``dataset`` came from, as a part of a run's key: a ``RAGFT_WIKITEXT_DIR`` folder by
    the text of its files (:func:`~ragft_helpers.wikitext.folder_key`), anything else by
    :func:`~ragft_helpers.checkpoints.portable_location`."""
    if dataset.source == SOURCE_FOLDER:
        return folder_key(Path(dataset.location))
    return portable_location(dataset.location, settings)


def run_spec(settings: Settings, model: Provenance, dataset: Provenance) -> dict[str, Any]:
    """What a WikiText run's result depends on: the training budgets, the base model, the data."""
    return {**training_spec(settings), "model": model.name,
            "model_source": portable_location(model.location, settings), "dataset": dataset.name,
            "dataset_source": dataset_key(dataset, settings)}


def default_run_dir(settings: Settings, model: Provenance, dataset: Provenance) -> Path:
    """``RAGFT_CACHE_DIR/runs/wikitext-finetuned-<model>-<profile>-<key>``: one checkpoint folder
    per model, profile and training settings, so resuming never mixes two of them."""
    name = f"{WIKITEXT_FINETUNED}-{model.name}-{settings.profile.name}"
    return keyed_dir(settings.cache_dir / "runs", name, run_spec(settings, model, dataset))


def finetune_on_wikitext(settings: Settings | None = None, output_dir: str | os.PathLike | None = None,
                         *, resume: bool = True, max_steps: int | None = None,
                         verbose: bool = True) -> FinetuneRun:
    """Load the model and WikiText, tokenize into blocks, train with ``Trainer``, return it all.

    Checkpoints go to ``output_dir`` (default :func:`default_run_dir`, keyed by the settings);
    with ``resume`` a rerun continues from the last one, or just reloads it when training had
    finished. ``max_steps`` replaces the profile's ``train_max_steps``. ``verbose=False`` prints no
    provenance lines (for a caller that printed them already).
    """
    settings = settings or get_settings()
    if max_steps is not None:
        settings = settings.with_budgets(train_max_steps=max_steps)
    start = time.perf_counter()
    set_seed(settings.seed)
    resolved = load_causal_lm(settings, verbose=verbose)
    wikitext, dataset_provenance = load_wikitext(settings, verbose=verbose)
    tokenizer = ensure_pad_token(resolved.tokenizer)
    lm_datasets = tokenize_and_group(wikitext, tokenizer, settings.profile.block_size)
    if output_dir is None:
        output_dir = default_run_dir(settings, resolved.provenance, dataset_provenance)
        write_settings(output_dir, run_spec(settings, resolved.provenance, dataset_provenance))
    trainer = build_trainer(resolved.model, tokenizer, lm_datasets, settings, output_dir)
    train_output = train(trainer, resume=resume)
    resolved.model.eval()
    return FinetuneRun(resolved.model, tokenizer, trainer, train_output, log_history_frame(trainer),
                       [resolved.provenance, dataset_provenance], time.perf_counter() - start,
                       wikitext, lm_datasets)


def load_wikitext_finetuned(settings: Settings | None = None) -> ResolvedModel:
    """The model notebook 02 saved as :data:`WIKITEXT_FINETUNED`."""
    return load_finetuned(WIKITEXT_FINETUNED, settings, how_to_create=HOW_TO_CREATE)
