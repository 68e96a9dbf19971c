"""Retrieval-augmented training step: the loss over every logit against the loss at the target
positions only (``training.TargetsOnlyCollator`` + ``training.targets_only_loss``).

A RAFT example is a prompt of a few hundred tokens (system prompt, retrieved chunks, question)
and a one-sentence target; labels are -100 on the prompt. The model's own loss projects every
position onto the 49,152-token vocabulary; the targets-only loss keeps the logits of the
positions whose next token is a target (``logits_to_keep``). Both paths run forward and backward
on the same real examples (``raft.training_examples`` at the profile's settings, batches of the
profile's ``train_batch_size``) in the training precision, in rounds that alternate which path
goes first; each path's fastest and median step are reported, and the two losses are compared.

    python benchmarks/bench_target_loss.py [--examples 8] [--rounds 3]

Prints a Markdown table and writes it to benchmarks/results/target-loss.md.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from pathlib import Path

# ragft_helpers first: it switches the HF libraries to offline mode when the hub is unreachable
from ragft_helpers import qa, raft, training
from ragft_helpers.assets import load_causal_lm
from ragft_helpers.config import get_settings
from ragft_helpers.lm import ensure_pad_token
from ragft_helpers.machine import cpu_threads, torch_device

import torch
from transformers import DataCollatorForSeq2Seq

RESULTS = Path(__file__).resolve().parent / "results" / "target-loss.md"


def step(model, batch: dict, targets_only: bool, precision: str | None) -> tuple[float, float]:
    """One forward and backward pass; (seconds, loss)."""
    autocast = (torch.autocast(torch_device(), dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    batch = dict(batch)
    start = time.perf_counter()
    with autocast:
        if targets_only:
            labels = batch.pop("labels")
            loss = training.targets_only_loss(model(**batch), labels)
        else:
            loss = model(**batch).loss
    loss.backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds, loss.item()


def measure(examples: int, rounds: int) -> dict:
    settings = get_settings()
    torch.set_num_threads(cpu_threads())
    precision = training.training_precision(settings)
    resolved = load_causal_lm(settings, verbose=False)
    model, tokenizer = resolved.model, ensure_pad_token(resolved.tokenizer)
    model.train()
    train_questions, _ = raft.split_questions(qa.load_questions())
    chosen = raft.training_examples(settings, tokenizer, train_questions)[:examples]
    rows = [raft.encode(example, tokenizer) for example in chosen]
    size = settings.profile.train_batch_size
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    full, kept = "every logit (the model's loss)", "target positions only"
    paths = {full: collate, kept: training.TargetsOnlyCollator(collate)}
    batches = {name: [c(rows[i:i + size]) for i in range(0, len(rows), size)] for name, c in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    losses: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(rounds):
        order = list(paths) if round_ % 2 == 0 else list(reversed(paths))
        for name in order:
            for batch in batches[name]:
                seconds, loss = step(model, batch, name == kept, precision)
                times[name].append(seconds)
                if round_ == 0:
                    losses[name].append(loss)
    scored = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches[full])
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[full])
    return {"model": resolved.provenance.name, "precision": precision, "device": torch_device(),
            "examples": len(rows), "batch": size, "tokens": tokens, "scored": scored,
            "rounds": rounds, "times": times, "losses": losses, "full": full, "kept": kept,
            "ratio": statistics.median(times[full]) / statistics.median(times[kept]),
            "max_loss_difference": max(abs(a - b) for a, b in zip(losses[full], losses[kept]))}


def report(r: dict) -> str:
    lines = ["# RAFT training step: every logit vs the target positions only", "",
             f"`python benchmarks/bench_target_loss.py --examples {r['examples']} --rounds {r['rounds']}`",
             "", f"Model {r['model']}, {r['precision']} on {r['device']} ({platform.machine()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads); {r['examples']} RAFT "
             f"examples in batches of {r['batch']}: {r['tokens']:,} tokens, {r['scored']:,} of them "
             f"targets; forward and backward, {r['rounds']} rounds alternating the order.", "",
             "| loss | fastest step (s) | median step (s) |", "| --- | ---: | ---: |"]
    for name, times in r["times"].items():
        lines.append(f"| {name} | {min(times):.2f} | {statistics.median(times):.2f} |")
    lines += ["", f"Median step, every logit / target positions only = **{r['ratio']:.2f}×**; the "
              f"losses of the first round differ by at most {r['max_loss_difference']:.1e}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8, help="RAFT examples per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure(args.examples, args.rounds)
    text = report(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    main()
