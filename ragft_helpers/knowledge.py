"""Knowledge injection by fine-tuning: continued pre-training on the knowledge-base articles.

Four variants (notebook 05): full fine-tuning or LoRA, each on the articles alone or on the
articles plus the question set's paraphrases (augmentation). :func:`ensure_variants` is the one
entry point; it trains only the variants missing from ``RAGFT_CACHE_DIR/finetuned``.
"""
from __future__ import annotations

import json
import math
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ragft_helpers.assets import (AssetError, Provenance, ResolvedModel, load_causal_lm,
                                  save_checkpoint)
from ragft_helpers.config import Settings, get_settings, set_seed
from ragft_helpers.corpus import load_documents
from ragft_helpers.evaluate import normalise
from ragft_helpers.finetune import (CREATED_BY, build_trainer, count_parameters, ensure_pad_token,
                                    finetuned_dir, load_finetuned, tokenize_and_group,
                                    train_and_restore_fp32)
from ragft_helpers.qa import KNOWLEDGE_DIR, Question, load_questions


@dataclass(frozen=True)
class Variant:
    name: str
    lora: bool
    augmented: bool


VARIANTS = (Variant("kb-full", False, False), Variant("kb-full-aug", False, True),
            Variant("kb-lora", True, False), Variant("kb-lora-aug", True, True))
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}
CREATED_BY.update({v.name: "notebook 05 (fine-tuning on the knowledge base), or "
                           f"knowledge.ensure_variants(settings, [{v.name!r}])" for v in VARIANTS})
LORA_RANK = 16
LORA_LEARNING_RATE_FACTOR = 10  # LoRA's few new weights need a larger step than full fine-tuning
RUN_FILE = "knowledge_run.json"
SOURCE_LORA = "LoRA adapter in RAGFT_CACHE_DIR"


# ---- training data -------------------------------------------------------------------------------

def augmentation_texts(questions: Iterable[Question]) -> list[str]:
    """The paraphrases of every answerable question (the facts restated, never the question).

    "updated" questions keep theirs: they state the pre-update fact, as the articles do.
    """
    return [text for q in questions if q.type != "unanswerable" for text in q.paraphrases]


def training_texts(article_texts: Sequence[str], questions: Iterable[Question],
                   augmented: bool) -> list[str]:
    """One row per document: the articles, then (when ``augmented``) one row per paraphrase."""
    return list(article_texts) + (augmentation_texts(questions) if augmented else [])


def find_leaks(questions: Iterable[Question], texts: Iterable[str]) -> list[str]:
    """Ids of questions whose normalised text occurs verbatim in a normalised training text."""
    corpus = [f" {normalise(text)} " for text in texts]
    return [q.id for q in questions
            if any(f" {normalise(q.question)} " in text for text in corpus)]


def kb_max_steps(n_blocks: int, settings: Settings) -> int:
    """``kb_train_epochs`` over ``n_blocks`` blocks, capped at the profile's ``train_max_steps``
    (the CPU budget)."""
    profile = settings.profile
    wanted = math.ceil(profile.kb_train_epochs * n_blocks / profile.train_batch_size)
    return max(1, min(wanted, profile.train_max_steps))


# ---- LoRA ----------------------------------------------------------------------------------------

def lora_target_modules(model) -> list[str]:
    """Attention projections to adapt: GPT-2's fused ``c_attn`` (a ``Conv1D``, hence
    ``fan_in_fan_out``), else Llama-style q/v."""
    return ["c_attn"] if model.config.model_type == "gpt2" else ["q_proj", "v_proj"]


def wrap_lora(model, r: int = LORA_RANK):
    """``model`` as a PEFT model with LoRA adapters (rank ``r``) on the attention projections."""
    from peft import LoraConfig, get_peft_model

    targets = lora_target_modules(model)
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=2 * r, lora_dropout=0.05,
                        target_modules=targets, fan_in_fan_out=targets == ["c_attn"])
    return get_peft_model(model, config)


# ---- measuring -----------------------------------------------------------------------------------

class PeakRSS:
    """Context manager sampling this process's resident memory; ``peak_mb`` after exit.

    On a CUDA device the peak allocated GPU memory is reported instead.
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def _sample(self):
        import psutil

        process = psutil.Process()
        while True:
            self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        import torch

        self._cuda = torch.cuda.is_available()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        self._stop.set()
        self._thread.join()
        if self._cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20


@dataclass
class KnowledgeRun:
    """What one variant's training cost and reached."""

    name: str
    lora: bool
    augmented: bool
    trainable_params: int
    total_params: int
    steps: int
    tokens_seen: int
    train_seconds: float
    peak_memory_mb: float
    final_loss: float
    first_loss: float
    training_rows: int


# ---- training, saving, loading -------------------------------------------------------------------

def _datasets(texts: Sequence[str], tokenizer, block_size: int):
    from datasets import Dataset, DatasetDict

    split = Dataset.from_dict({"text": list(texts)})
    return tokenize_and_group(DatasetDict(train=split, validation=split), tokenizer, block_size,
                              rows_are_documents=True)


def train_variant(variant: Variant, texts: Sequence[str], settings: Settings, base=None):
    """Continue pre-training the base model (fresh copy unless ``base`` is given) on ``texts``.

    Returns ``(model, tokenizer, KnowledgeRun)``; the model is a ``PeftModel`` for LoRA variants.
    """
    set_seed(settings.seed)
    resolved = base or load_causal_lm(settings)
    model, tokenizer = resolved.model, ensure_pad_token(resolved.tokenizer)
    if variant.lora:
        model = wrap_lora(model)
    profile = settings.profile
    lm = _datasets(texts, tokenizer, profile.block_size)
    steps = kb_max_steps(len(lm["train"]), settings)
    learning_rate = profile.learning_rate * (LORA_LEARNING_RATE_FACTOR if variant.lora else 1)
    with tempfile.TemporaryDirectory(prefix="kb-run-") as output_dir:
        trainer = build_trainer(model, tokenizer, lm, settings, output_dir, max_steps=steps,
                                eval_strategy="no", eval_on_start=False, save_strategy="no",
                                logging_steps=1, learning_rate=learning_rate)
        trainable, total = count_parameters(model)
        start = time.perf_counter()
        with PeakRSS() as memory:
            train_and_restore_fp32(trainer)
        seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model.eval()
    run = KnowledgeRun(variant.name, variant.lora, variant.augmented, trainable, total, steps,
                       steps * profile.train_batch_size * profile.block_size, seconds,
                       memory.peak_mb, losses[-1], losses[0], len(texts))
    return model, tokenizer, run


def save_variant(model, tokenizer, run: KnowledgeRun, settings: Settings) -> Path:
    """Save a variant where :func:`load_variant` finds it, with its :class:`KnowledgeRun`.

    Written atomically by ``assets.save_checkpoint``; LoRA variants save only the adapter
    (``PeftModel.save_pretrained``) and the tokenizer.
    """
    target = save_checkpoint(model, tokenizer, finetuned_dir(run.name, settings))
    (target / RUN_FILE).write_text(json.dumps(asdict(run), indent=2), encoding="utf-8")
    return target


def variant_run(name: str, settings: Settings) -> KnowledgeRun | None:
    """The saved :class:`KnowledgeRun` of a variant, or ``None`` when it was never trained."""
    path = finetuned_dir(name, settings) / RUN_FILE
    return KnowledgeRun(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def load_variant(name: str, settings: Settings | None = None) -> ResolvedModel:
    """Load a saved variant: a full model, or the base model with its LoRA adapter."""
    from peft import PeftModel

    settings = settings or get_settings()
    folder = finetuned_dir(name, settings)
    if not (folder / "adapter_config.json").is_file():
        return load_finetuned(name, settings)
    start = time.perf_counter()
    base = load_causal_lm(settings)
    model = PeftModel.from_pretrained(base.model, folder)
    model.eval()
    provenance = Provenance("model", name, SOURCE_LORA, str(folder))
    return ResolvedModel(model, base.tokenizer, provenance, time.perf_counter() - start)


def article_texts(folder: Path = KNOWLEDGE_DIR) -> list[str]:
    return [doc.text for doc in load_documents(folder)]


def ensure_variants(settings: Settings | None = None, names: Sequence[str] | None = None, *,
                    retrain: bool = False) -> list[KnowledgeRun]:
    """Train and save each named variant (default: all four) that is not saved yet.

    Returns every variant's :class:`KnowledgeRun`, measured now or read from its folder.
    """
    settings = settings or get_settings()
    names = list(names or VARIANT_BY_NAME)
    unknown = [n for n in names if n not in VARIANT_BY_NAME]
    if unknown:
        raise AssetError(f"Unknown variants {unknown}; use some of {list(VARIANT_BY_NAME)}.")
    articles = article_texts()
    questions = load_questions()
    runs = []
    for name in names:
        run = None if retrain else variant_run(name, settings)
        if run is None:
            variant = VARIANT_BY_NAME[name]
            texts = training_texts(articles, questions, variant.augmented)
            model, tokenizer, run = train_variant(variant, texts, settings)
            save_variant(model, tokenizer, run, settings)
            print(f"{name}: {run.steps} steps in {run.train_seconds:.0f} s, "
                  f"final loss {run.final_loss:.3f}")
        runs.append(run)
    return runs

