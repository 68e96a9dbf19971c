"""Where trained models live: folders keyed by the settings that produced them, saving, loading.

A run or model folder is ``<name>-<key>``, where the key is a short hash of the settings that
change the result (budgets, learning rate, LoRA rank, base model, training data); a readable
``settings.json`` inside records them. Changing any of them gives a new folder, so it trains anew;
the same settings find the old folder, so a re-run reloads.
"""
from __future__ import annotations

import hashlib
import json
import re
import sysconfig
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragft_helpers.assets import AssetError, ResolvedModel, load_causal_lm, save_checkpoint
from ragft_helpers.config import DATA_DIR, Provenance, Settings, get_settings

SETTINGS_FILE = "settings.json"
SOURCE_FINETUNED = "fine-tuned copy in RAGFT_CACHE_DIR"
SOURCE_LORA = "LoRA adapter in RAGFT_CACHE_DIR"


def settings_key(spec: dict[str, Any]) -> str:
    """A 10-character hash of ``spec`` (JSON with sorted keys): equal settings, equal key."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def slug(text: str) -> str:
    """``text`` made safe for a folder name (``HuggingFaceTB/SmolLM2`` → ``HuggingFaceTB--SmolLM2``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", text)


def keyed_dir(parent: Path, name: str, spec: dict[str, Any]) -> Path:
    """``parent/<name>-<settings_key(spec)>``; nothing is created."""
    return parent / f"{slug(name)}-{settings_key(spec)}"


def portable_location(location: str, settings: Settings) -> str:
    """``location`` as a part of a key that survives moving the cache, the checkout or the
    environment: a folder inside ``RAGFT_CACHE_DIR``, the workbook's ``data/`` or the installed
    packages becomes ``cache:``, ``data:`` or ``site-packages:`` and its relative path, so a cache
    copied to another machine reloads its models instead of training them again. A hub id or any
    other folder is kept as given."""
    path = Path(location)
    if not path.is_absolute():
        return location
    roots = (("cache", settings.cache_dir), ("data", DATA_DIR),
             ("site-packages", Path(sysconfig.get_paths()["purelib"])))
    for tag, root in roots:
        try:
            return f"{tag}:{path.resolve().relative_to(Path(root).resolve()).as_posix()}"
        except ValueError:
            continue
    return location


def write_settings(folder: Path, spec: dict[str, Any]) -> Path:
    """Record ``spec`` readably as ``folder/settings.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SETTINGS_FILE
    path.write_text(json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def text_fingerprint(texts) -> str:
    """A short hash of training texts, so a folder keyed by it changes when the data changes."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


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


@contextmanager
def peft_deprecation_hidden():
    """peft 0.21 reads the model property ``is_gradient_checkpointing``, which transformers 5
    renamed, whenever it wraps or loads a model: exactly that FutureWarning is ignored (it is
    peft's to update and changes nothing); every other warning shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield


def load_saved(folder: Path, name: str, settings: Settings | None = None, *,
               how_to_create: str | None = None) -> ResolvedModel:
    """Load a model saved in ``folder``: a full checkpoint, or the base model with a LoRA adapter.

    A missing folder raises :class:`AssetError` saying how to create it (``how_to_create``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = settings or get_settings()
    start = time.perf_counter()
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_causal_lm(settings, verbose=False)  # the adapter's provenance is returned instead
        with peft_deprecation_hidden():
            model = PeftModel.from_pretrained(base.model, folder)
        model.eval()
        return ResolvedModel(model, base.tokenizer, Provenance("model", name, SOURCE_LORA, str(folder)),
                             time.perf_counter() - start)
    if not (folder / "config.json").is_file():
        how = how_to_create or (f"Create it with checkpoints.save_finetuned(model, tokenizer, "
                                f"{name!r}, settings)")
        raise AssetError(f"No fine-tuned model {name!r} in {folder}. {how} (with the same "
                         "RAGFT_CACHE_DIR).")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    model.eval()
    return ResolvedModel(model, tokenizer, Provenance("model", name, SOURCE_FINETUNED, str(folder)),
                         time.perf_counter() - start)


def load_finetuned(name: str, settings: Settings | None = None, *,
                   how_to_create: str | None = None) -> ResolvedModel:
    """Load a model saved by :func:`save_finetuned`; a clear error names what creates it."""
    return load_saved(finetuned_dir(name, settings), name, settings, how_to_create=how_to_create)
