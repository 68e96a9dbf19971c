"""Why the usual "fine-tune GPT-2 on WikiText" snippet fails as written, reproduced live.

The snippet, as it circulates in 2023-era articles::

    tokenizer = GPT2Tokenizer.from_pretrained("gpt2")
    model = GPT2LMHeadModel.from_pretrained("gpt2")
    dataset = load_dataset("wikitext", "wikitext-2-raw-v1")
    tokenized = dataset.map(lambda x: tokenizer(x["text"], padding="max_length", truncation=True),
                            batched=True)
    args = TrainingArguments(output_dir="./results", evaluation_strategy="epoch")
    trainer = Trainer(model=model, args=args, train_dataset=tokenized["train"],
                      eval_dataset=tokenized["validation"])
    trainer.train()

Each function below runs one of its lines against the installed libraries and reports what
happens, so the notebook shows real error messages rather than claims.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass


@dataclass(frozen=True)
class Pitfall:
    snippet: str  # the line of the snippet
    outcome: str  # what it does here: the error raised or the measured cost
    fix: str  # what ragft_helpers does instead
    fails: bool  # True when the line raises an error


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"


def renamed_evaluation_strategy(output_dir) -> Pitfall:
    from transformers import TrainingArguments

    snippet = 'TrainingArguments(..., evaluation_strategy="epoch")'
    fix = 'eval_strategy="steps" (renamed in transformers 4.46, the old name removed in 5)'
    try:
        TrainingArguments(output_dir=str(output_dir), evaluation_strategy="epoch")
    except TypeError as err:
        return Pitfall(snippet, _first_line(err), fix, True)
    return Pitfall(snippet, "accepted by this transformers version", fix, False)


def padding_without_pad_token(tokenizer) -> Pitfall:
    """GPT-2's tokenizer has no pad token; reproduced on a copy of ours with the pad token removed."""
    snippet = 'tokenizer(x["text"], padding="max_length", truncation=True)'
    fix = "ensure_pad_token(): pad with EOS; better, group_texts() so nothing needs padding"
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    try:
        no_pad(["a short line", "a somewhat longer line of text"], padding="max_length",
               truncation=True, max_length=16)
    except ValueError as err:
        return Pitfall(snippet, _first_line(err), fix, True)
    return Pitfall(snippet, "padded without error", fix, False)


def padding_waste(tokenizer, lines: list[str], max_length: int) -> float:
    """Fraction of the tokens in ``padding="max_length"`` batches that are padding."""
    real = sum(min(len(ids), max_length) for ids in tokenizer(lines, add_special_tokens=False)["input_ids"])
    return 1.0 - real / (len(lines) * max_length)


def padded_lines_pitfall(tokenizer, lines: list[str], max_length: int) -> Pitfall:
    waste = padding_waste(tokenizer, lines, max_length)
    blank = sum(not line.strip() for line in lines) / len(lines)
    return Pitfall(
        f'padding="max_length" (max_length={max_length}) on WikiText lines',
        f"{waste:.0%} of the training tokens would be padding; {blank:.0%} of the lines are blank",
        "tokenize_and_group(): drop blank lines, concatenate, cut into full blocks", False)


def missing_labels(model, tokenizer, output_dir) -> Pitfall:
    """Without ``labels`` a causal LM returns no loss, so ``Trainer`` cannot train it."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    snippet = "Trainer(model=model, train_dataset=tokenized['train'])  # no labels column"
    fix = "labels = input_ids in group_texts(); DataCollatorForLanguageModeling(mlm=False)"
    encoded = tokenizer(["the ferry leaves at seven"] * 2)
    dataset = Dataset.from_dict({"input_ids": encoded["input_ids"],
                                 "attention_mask": encoded["attention_mask"]})
    args = TrainingArguments(output_dir=str(output_dir), max_steps=1, per_device_train_batch_size=2,
                             report_to="none", use_cpu=True, save_strategy="no",
                             disable_tqdm=True)
    trainer = Trainer(model=copy.deepcopy(model), args=args, train_dataset=dataset)
    try:
        trainer.train()
    except ValueError as err:
        return Pitfall(snippet, _first_line(err), fix, True)
    return Pitfall(snippet, "trained without labels", fix, False)


def hub_download(hub_reachable: bool, reason: str) -> Pitfall:
    snippet = 'GPT2LMHeadModel.from_pretrained("gpt2")'
    fix = "assets.load_causal_lm(): probe the hub once, then cache → hub → bundled offline model"
    if hub_reachable:
        return Pitfall(snippet, "works here: the hub is reachable", fix, False)
    return Pitfall(snippet, f"no hub here ({reason}); without the probe it retries for ~45 s",
                   fix, True)


def snippet_pitfalls(model, tokenizer, lines: list[str], output_dir, *, max_length: int = 1024,
                     hub_reachable: bool = False, hub_reason: str = ""):
    """All pitfalls as a table: snippet line, what happens here, the fix."""
    import pandas as pd

    rows = [
        hub_download(hub_reachable, hub_reason),
        padding_without_pad_token(tokenizer),
        padded_lines_pitfall(tokenizer, lines, max_length),
        missing_labels(model, tokenizer, output_dir),
        renamed_evaluation_strategy(output_dir),
    ]
    return pd.DataFrame([vars(row) for row in rows])
