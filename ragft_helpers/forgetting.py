"""Catastrophic forgetting, watched while it happens.

The knowledge fine-tune of notebook 05 (kb-full: the articles, the profile's batch, block size and
learning rate) is trained for the profile's ``forgetting_max_steps`` at a constant learning rate —
as notebook 07's over-training run, nothing but its length limits it — while ``Trainer`` evaluates
perplexity on held-out WikiText, text it never trains on: before the first step and
:data:`POINTS` times more. Notebook 08 plots the curve and judges the claim "fine-tuning may
suffer catastrophic forgetting" from its first and last points (:func:`endpoints`).
"""
from __future__ import annotations

import math
import tempfile

from ragft_helpers import score_cache
from ragft_helpers.assets import causal_lm_candidates, load_causal_lm
from ragft_helpers.checkpoints import portable_location, text_fingerprint
from ragft_helpers.config import Settings, set_seed
from ragft_helpers.injection import article_texts, document_blocks, kb_max_steps
from ragft_helpers.lm import ensure_pad_token
from ragft_helpers.machine import release_freed_memory
from ragft_helpers.training import build_trainer, measured_train, tokenize_and_group, without_log_lines

POINTS = 4  # evaluations after the one before training
COLUMNS = ["step", "wikitext_perplexity", "kb_loss"]


def forgetting_steps(n_blocks: int, settings: Settings) -> int:
    """The profile's ``forgetting_max_steps``, or kb-full's own steps (``injection.kb_max_steps``)
    when it is None."""
    return settings.profile.forgetting_max_steps or kb_max_steps(n_blocks, settings)


def forgetting_curve(settings: Settings, *, held_out, texts=None, base=None):
    """Fine-tune on ``texts`` (default: the knowledge-base articles) and measure the perplexity of
    ``held_out`` (WikiText's validation split, or any dataset with a "text" column, cut to the
    profile's ``eval_max_tokens``) before training and :data:`POINTS` times during it.

    One row per evaluation: ``step``, ``wikitext_perplexity`` and ``kb_loss`` (the training loss
    logged at that step; none before the first). ``base``: a ``(model, tokenizer)`` to train in
    place, for tests; without it a fresh copy of the base model trains and the curve is saved
    (:func:`~ragft_helpers.score_cache.reused`): a re-run reloads it and trains nothing.
    """
    texts = list(texts) if texts is not None else article_texts()
    if base is not None:
        return _curve(settings, held_out, texts, base)
    source = causal_lm_candidates(settings)[0][0]

    def compute():
        curve = _curve(settings, held_out, texts)
        release_freed_memory()  # the trained copy and its optimiser state, before other models load
        return curve

    return score_cache.reused(
        "forgetting-curve", settings, compute,
        texts=text_fingerprint(texts), held_out=text_fingerprint(list(held_out["text"])),
        base=[source.name, portable_location(str(source.location), settings)])


def _curve(settings: Settings, held_out, texts, base=None):
    import pandas as pd
    from datasets import DatasetDict

    set_seed(settings.seed)
    if base is None:
        resolved = load_causal_lm(settings, verbose=False)
        base = resolved.model, resolved.tokenizer
    model, tokenizer = base[0], ensure_pad_token(base[1])
    block_size = settings.profile.block_size
    train = document_blocks(texts, tokenizer, block_size)["train"]
    validation = tokenize_and_group(DatasetDict(train=held_out.select_columns(["text"])), tokenizer,
                                    block_size)["train"]
    steps = forgetting_steps(len(train), settings)
    with tempfile.TemporaryDirectory(prefix="forgetting-") as output_dir:
        trainer = without_log_lines(build_trainer(
            model, tokenizer, DatasetDict(train=train, validation=validation), settings, output_dir,
            max_steps=steps, lr_scheduler_type="constant", warmup_steps=0, eval_strategy="steps",
            eval_steps=math.ceil(steps / POINTS), eval_on_start=True, save_strategy="no", logging_steps=1))
        measured_train(trainer)  # Trainer evaluates once more after its last step
    model.eval()
    losses = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    rows = [{"step": entry["step"], "wikitext_perplexity": math.exp(entry["eval_loss"]),
             "kb_loss": losses.get(entry["step"], float("nan"))}
            for entry in trainer.state.log_history if "eval_loss" in entry]
    return pd.DataFrame(rows, columns=COLUMNS).drop_duplicates("step", keep="last").reset_index(drop=True)


def endpoints(curve) -> dict[str, float]:
    """The held-out perplexity before training ("base") and after the last step ("ft"), as
    ``claims.Evidence.wikitext_perplexity`` takes them, with the number of steps between."""
    first, last = curve.iloc[0], curve.iloc[-1]
    return {"base": float(first["wikitext_perplexity"]), "ft": float(last["wikitext_perplexity"]),
            "steps": int(last["step"])}
