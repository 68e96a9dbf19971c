"""Finished scoring, reloaded: a result saved under a key of everything it depends on.

Scoring a system on a few hundred questions (``harness.evaluate_system``) or messages
(``tasks.evaluate``) takes minutes; scoring the same system on the same items again gives the
same rows. The key hashes what the result depends on: the model's
weights (every tensor, so a retrained or perturbed model is a new key), its tokenizer, the
retrieval index (every chunk id, text and metadata, and which of its notices are in force on the
date notices are judged against), the settings (profile budgets, seed), the questions, and the
source of this package with the versions of torch and transformers (so a changed scorer never
reloads an old result). A re-run of a notebook therefore reloads its scores in a second, and
anything that changes a score scores again.

Results live in ``RAGFT_CACHE_DIR/scores/<system>-<key>.pkl``; deleting the folder is always safe.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from datetime import date
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

from ragft_helpers.checkpoints import slug
from ragft_helpers.config import Settings, in_force, retrieval_date

FOLDER = "scores"
PACKAGE_DIR = Path(__file__).resolve().parent


def model_fingerprint(model) -> str:
    """A hash of every parameter and buffer of ``model`` (names, dtypes, shapes and bytes)."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode("utf-8"))
        digest.update(memoryview(tensor.view(torch.uint8).numpy()))
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what shapes a prompt: the tokenizer's name (the last part of its path, so a moved
    cache keeps its scores), vocabulary size and chat template."""
    parts = [Path(getattr(tokenizer, "name_or_path", "") or "").name, str(len(tokenizer)),
             str(getattr(tokenizer, "chat_template", "") or "")]
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).hexdigest()


def collection_fingerprint(collection, day: date | None = None) -> str:
    """A hash of the index's name, every chunk's id, text and metadata, and the ids of its notices
    in force on ``day``. A date changes what retrieval returns only through those, so a run that
    crosses midnight keeps its scores unless a notice comes into force."""
    found = collection.get(include=["documents", "metadatas"])
    rows = sorted(zip(found["ids"], found["documents"], found["metadatas"]), key=lambda row: row[0])
    current = [id_ for id_, _, metadata in rows if day is not None and in_force(metadata, day)]
    text = json.dumps([collection.name, rows, current], sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of this package's source and the versions of the libraries that compute scores."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        digest.update(path.name.encode("utf-8"))
        digest.update(path.read_bytes())
    for package in ("torch", "transformers", "chromadb", "bm25s"):
        try:
            digest.update(f"{package}={version(package)}".encode("utf-8"))
        except PackageNotFoundError:
            digest.update(f"{package}=none".encode("utf-8"))
    return digest.hexdigest()


def part_fingerprint(value, day: date | None = None) -> Any:
    """What a system's field contributes to a key: a model, tokenizer or index by its content (an
    index with its notices in force on ``day``), anything else as itself."""
    import torch

    if isinstance(value, torch.nn.Module):
        return model_fingerprint(value)
    if hasattr(value, "convert_tokens_to_ids"):  # a tokenizer
        return tokenizer_fingerprint(value)
    if hasattr(value, "get") and hasattr(value, "name") and hasattr(value, "count"):  # an index
        return collection_fingerprint(value, day)
    return value


def system_fingerprint(system, settings: Settings) -> dict[str, Any]:
    """Every field of a system dataclass (its type included), each by :func:`part_fingerprint`
    (an index with its notices in force on the settings' :func:`~ragft_helpers.config.retrieval_date`)."""
    return _dataclass_fingerprint(system, retrieval_date(settings))


def _dataclass_fingerprint(value, day: date) -> dict[str, Any]:
    return {"type": type(value).__qualname__,
            **{field.name: part_fingerprint(getattr(value, field.name), day)
               for field in dataclasses.fields(value)}}


def _key(spec: dict, settings: Settings) -> str:
    """A hash of ``spec``, the settings and this package's code. Left out of the settings: where
    files live (the same scores wherever the cache is) and the date notices are judged against
    (an index's fingerprint holds the notices in force on it, :func:`collection_fingerprint`)."""
    spec = {**spec,
            "settings": {key: value for key, value in dataclasses.asdict(settings).items()
                         if key not in ("cache_dir", "wikitext_dir", "chroma_url", "as_of")},
            "code": code_fingerprint()}
    text = json.dumps(spec, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def evaluation_key(system, items: Sequence[Any], settings: Settings, *,
                   fingerprint: dict | None = None, **options) -> str:
    """The key of scoring ``system`` (a dataclass) on ``items`` (questions or messages, also
    dataclasses) with ``settings`` and ``options``. ``fingerprint``: the system's
    :func:`system_fingerprint`, when the caller has it already (hashing a model takes a moment)."""
    return _key({"system": fingerprint or system_fingerprint(system, settings),
                 "items": [dataclasses.asdict(item) for item in items], "options": options}, settings)


def path_of(system, items: Sequence[Any], settings: Settings, *, fingerprint: dict | None = None,
            **options) -> Path:
    """Where the result of scoring ``system`` on ``items`` (:func:`evaluation_key`) is saved."""
    key = evaluation_key(system, items, settings, fingerprint=fingerprint, **options)
    return settings.cache_dir / FOLDER / f"{slug(system.name)}-{key}.pkl"


def rows_path(fingerprint: dict, settings: Settings) -> Path:
    """Where the rows scored by a system are kept, one per item and part (:func:`item_key`),
    whatever the system is called and whichever items were scored with them: a later call on
    other items, a subset or a superset, scores only the rows not kept yet. ``fingerprint``: the
    system's :func:`system_fingerprint`; its name is left out of the key."""
    fields = {name: value for name, value in fingerprint.items() if name != "name"}
    return settings.cache_dir / FOLDER / f"rows-{_key({'rows': fields}, settings)}.pkl"


def item_key(item) -> str:
    """A hash of every field of ``item`` (a question or a message dataclass)."""
    text = json.dumps(dataclasses.asdict(item), sort_keys=True, default=repr)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _input_fingerprint(value, day: date) -> Any:
    """What an input of :func:`reused` contributes to its key: items of a list or dict one by one, a
    dataclass by its fields (:func:`system_fingerprint`), anything else by :func:`part_fingerprint`."""
    if isinstance(value, (list, tuple)):
        return [_input_fingerprint(item, day) for item in value]
    if isinstance(value, dict):
        return {key: _input_fingerprint(item, day) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dataclass_fingerprint(value, day)
    return part_fingerprint(value, day)


def reused(name: str, settings: Settings, compute, **inputs):
    """``compute()``, or the result an earlier call saved under the same key: ``name``, the
    ``inputs`` (models and tokenizers by their content, messages and questions by their fields),
    the settings and the code. For measurements a notebook repeats on every run (a training
    curve, sampled answers, perplexities): a re-run reloads them."""
    day = retrieval_date(settings)
    key = _key({"name": name, "inputs": {k: _input_fingerprint(v, day) for k, v in inputs.items()}},
               settings)
    path = settings.cache_dir / FOLDER / f"{slug(name)}-{key}.pkl"
    earlier = load(path)
    if earlier is not None:
        return earlier
    result = compute()
    save(path, result)
    return result


def load(path: Path):
    """The result saved at ``path``, or ``None`` when there is none (or it cannot be read)."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None  # half-written, or saved by another version of a library: score again


def save(path: Path, result) -> None:
    """Write ``result`` to ``path`` atomically (a crash leaves no half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as handle:
        pickle.dump(result, handle)
    partial.replace(path)
