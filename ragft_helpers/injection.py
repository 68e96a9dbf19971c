"""Knowledge injection by fine-tuning: continued pre-training on the knowledge-base articles.

Four variants (notebook 05): full fine-tuning or LoRA, each on the articles alone or on the
articles plus the question set's paraphrases (augmentation). A fifth, the control
"kb-full-scratch" (notebook 08), trains the same architecture from random weights with kb-full's
budget: what the pre-trained start is worth. :func:`ensure_variants` is the one entry point; it
trains only the variants whose folder (keyed by the settings and data that produce them) is not
saved yet in ``RAGFT_CACHE_DIR/finetuned/<profile>/``.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ragft_helpers.assets import (AssetError, ResolvedModel, causal_lm_candidates, load_causal_lm,
                                  save_checkpoint)
from ragft_helpers.checkpoints import (keyed_dir, load_saved, peft_deprecation_hidden,
                                       portable_location, text_fingerprint, write_settings)
from ragft_helpers.config import KNOWLEDGE_DIR, Settings, get_settings, set_seed
from ragft_helpers.corpus import load_documents
from ragft_helpers.lm import ensure_pad_token
from ragft_helpers.machine import release_freed_memory
from ragft_helpers.qa import Question, load_questions
from ragft_helpers.scoring import normalise
from ragft_helpers.training import (build_trainer, measured_train, tokenize_and_group, training_spec,
                                    without_log_lines)


@dataclass(frozen=True)
class Variant:
    name: str
    lora: bool
    augmented: bool
    scratch: bool = False  # random initial weights of the base model's architecture


VARIANTS = (Variant("kb-full", False, False), Variant("kb-full-aug", False, True),
            Variant("kb-lora", True, False), Variant("kb-lora-aug", True, True))
SCRATCH = Variant("kb-full-scratch", False, False, scratch=True)  # kb-full without pre-training
VARIANT_BY_NAME = {v.name: v for v in (*VARIANTS, SCRATCH)}
RUN_FILE = "knowledge_run.json"


def how_to_create(name: str) -> str:
    return (f"Run notebook 05 (fine-tuning on the knowledge base), or "
            f"injection.ensure_variants(settings, [{name!r}]), first: it saves the model there")


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


def wrap_lora(model, r: int):
    """``model`` as a PEFT model with LoRA adapters (rank ``r``) on the attention projections."""
    from peft import LoraConfig, get_peft_model

    targets = lora_target_modules(model)
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=2 * r, lora_dropout=0.05,
                        target_modules=targets, fan_in_fan_out=targets == ["c_attn"])
    with peft_deprecation_hidden():
        return get_peft_model(model, config)


# ---- training, saving, loading -------------------------------------------------------------------

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
    final_loss: float  # mean of the last eighth of the logged losses (training.TrainingCost)
    first_loss: float  # mean of the first eighth
    training_rows: int
    # Every logged training loss, one per step (empty in runs saved before they were recorded).
    losses: list[float] = field(default_factory=list)


def document_blocks(texts: Sequence[str], tokenizer, block_size: int):
    """``texts`` (one document each, EOS after each) in ``block_size`` blocks, as train and
    validation of a ``DatasetDict``, for ``training.build_trainer``."""
    from datasets import Dataset, DatasetDict

    split = Dataset.from_dict({"text": list(texts)})
    return tokenize_and_group(DatasetDict(train=split, validation=split), tokenizer, block_size,
                              rows_are_documents=True)


def train_variant(variant: Variant, texts: Sequence[str], settings: Settings, base=None):
    """Continue pre-training the base model (fresh copy unless ``base`` is given) on ``texts``;
    a ``scratch`` variant trains the same architecture from random weights instead.

    Returns ``(model, tokenizer, KnowledgeRun)``; the model is a ``PeftModel`` for LoRA variants.
    """
    set_seed(settings.seed)
    resolved = base or load_causal_lm(settings, verbose=False)  # no provenance line per variant
    model, tokenizer = resolved.model, ensure_pad_token(resolved.tokenizer)
    profile = settings.profile
    if variant.scratch:
        from transformers import AutoModelForCausalLM

        set_seed(settings.seed)
        model = AutoModelForCausalLM.from_config(model.config).to(model.dtype)
    if variant.lora:
        model = wrap_lora(model, profile.lora_rank)
    lm = document_blocks(texts, tokenizer, profile.block_size)
    steps = kb_max_steps(len(lm["train"]), settings)
    learning_rate = profile.learning_rate * (profile.lora_learning_rate_factor if variant.lora else 1)
    with tempfile.TemporaryDirectory(prefix="kb-run-") as output_dir:
        trainer = without_log_lines(build_trainer(
            model, tokenizer, lm, settings, output_dir, max_steps=steps, eval_strategy="no",
            eval_on_start=False, save_strategy="no", logging_steps=1, learning_rate=learning_rate))
        cost = measured_train(trainer)
    model.eval()
    run = KnowledgeRun(variant.name, variant.lora, variant.augmented, cost.trainable_params,
                       cost.total_params, steps, steps * profile.train_batch_size * profile.block_size,
                       cost.seconds, cost.peak_memory_mb, cost.final_loss, cost.first_loss, len(texts),
                       list(cost.losses))
    return model, tokenizer, run


def variant_spec(variant: Variant, texts: Sequence[str], settings: Settings) -> dict[str, Any]:
    """What a variant's weights depend on: training budgets, LoRA settings, base model, data."""
    base = causal_lm_candidates(settings)[0][0]
    profile = settings.profile
    spec = {**training_spec(settings), "variant": variant.name, "lora": variant.lora,
            "augmented": variant.augmented, "kb_train_epochs": profile.kb_train_epochs,
            "model": base.name, "model_source": portable_location(base.location, settings),
            "training_texts": text_fingerprint(texts)}
    if variant.scratch:
        spec["scratch"] = True
    if variant.lora:
        spec.update(lora_rank=profile.lora_rank,
                    lora_learning_rate_factor=profile.lora_learning_rate_factor)
    return spec


def variant_dir(variant: Variant, texts: Sequence[str], settings: Settings) -> Path:
    """``RAGFT_CACHE_DIR/finetuned/<profile>/<variant>-<key>``, keyed by :func:`variant_spec`."""
    parent = settings.cache_dir / "finetuned" / settings.profile.name
    return keyed_dir(parent, variant.name, variant_spec(variant, texts, settings))


def save_variant(model, tokenizer, run: KnowledgeRun, folder: Path, spec: dict[str, Any]) -> Path:
    """Save a variant to ``folder`` with its :class:`KnowledgeRun` and ``settings.json``.

    Written atomically by ``assets.save_checkpoint``; LoRA variants save only the adapter
    (``PeftModel.save_pretrained``) and the tokenizer.
    """
    target = save_checkpoint(model, tokenizer, folder)
    (target / RUN_FILE).write_text(json.dumps(asdict(run), indent=2), encoding="utf-8")
    write_settings(target, spec)
    return target


def _variant(name: str) -> Variant:
    if name not in VARIANT_BY_NAME:
        raise AssetError(f"Unknown variant {name!r}; use one of {list(VARIANT_BY_NAME)}.")
    return VARIANT_BY_NAME[name]


def _texts(variant: Variant, corpus: tuple[list[str], list[Question]] | None = None) -> list[str]:
    articles, questions = corpus or (article_texts(), load_questions())
    return training_texts(articles, questions, variant.augmented)


def variant_run(name: str, settings: Settings) -> KnowledgeRun | None:
    """The saved :class:`KnowledgeRun` of a variant with these settings, or ``None`` when it was
    never trained with them."""
    variant = _variant(name)
    path = variant_dir(variant, _texts(variant), settings) / RUN_FILE
    return KnowledgeRun(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def load_variant(name: str, settings: Settings | None = None) -> ResolvedModel:
    """Load a saved variant: a full model, or the base model with its LoRA adapter."""
    settings = settings or get_settings()
    variant = _variant(name)
    return load_saved(variant_dir(variant, _texts(variant), settings), name, settings,
                      how_to_create=how_to_create(name))


def article_texts(folder: Path = KNOWLEDGE_DIR) -> list[str]:
    return [doc.text for doc in load_documents(folder)]


def ensure_variants(settings: Settings | None = None, names: Sequence[str] | None = None, *,
                    retrain: bool = False) -> list[KnowledgeRun]:
    """Train and save each named variant (default: the four of notebook 05) not yet saved with
    these settings.

    Returns every variant's :class:`KnowledgeRun`, measured now or read from its folder.
    """
    settings = settings or get_settings()
    variants = [_variant(name) for name in names] if names else list(VARIANTS)
    corpus = (article_texts(), load_questions())
    runs = []
    for variant in variants:
        texts = _texts(variant, corpus)
        folder = variant_dir(variant, texts, settings)
        saved = folder / RUN_FILE
        if saved.is_file() and not retrain:
            runs.append(KnowledgeRun(**json.loads(saved.read_text(encoding="utf-8"))))
            continue
        model, tokenizer, run = train_variant(variant, texts, settings)
        save_variant(model, tokenizer, run, folder, variant_spec(variant, texts, settings))
        del model
        release_freed_memory()  # before the next variant trains: load_variant brings it back
        print(f"{variant.name}: {run.steps} steps in {run.train_seconds:.0f} s, "
              f"final loss {run.final_loss:.3f}")
        runs.append(run)
    return runs
