"""Training throughput: the ``Trainer`` path (``build_trainer``) against a plain PyTorch loop.

Both paths train a fresh copy of the same model on the same random token blocks, with the same
batch size, block length, number of steps and optimizer (the one ``Trainer`` picks for the
profile: fused AdamW, or Adafactor at the laptop profile), without gradient accumulation, in
rounds that alternate which path goes first. Each path's throughput comes from its fastest step
(as ``timeit`` does: other work on the machine only ever slows a step down), each round's first
step (warm-up) left out; the median step is reported too. Both train in the precision of
``RAGFT_PRECISION`` (bf16 autocast on CPUs with native bf16, else fp32; see
``training.mixed_precision``). The machine's matmul speed in that precision gives a rough
ceiling: training costs about 6 × parameters FLOPs per token, so
tokens/s ≤ GFLOP/s · 1e9 / (6 · parameters).

    python benchmarks/bench_training.py [--steps 10] [--rounds 2] [--batch-size 4] [--block-size 128] [--tiny]

Prints a Markdown table and writes it to benchmarks/results/training.md.
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# ragft_helpers first: it switches the HF libraries to offline mode when the hub is unreachable
from ragft_helpers.config import get_settings, set_seed
from ragft_helpers.lm import count_parameters
from ragft_helpers.machine import cpu_threads, matmul_gflops
from ragft_helpers.speed import rate_record
from ragft_helpers.training import build_trainer, mixed_precision

import torch
from datasets import Dataset, DatasetDict
from transformers import Trainer, TrainerCallback

RESULTS = Path(__file__).resolve().parent / "results" / "training.md"
TARGET_RATIO = 0.90
TINY_VOCAB = 8192


def tiny_model_and_tokenizer():
    """A 4-layer GPT-2 (n_embd 256) and a word-level tokenizer over a synthetic vocabulary."""
    from tokenizers import Tokenizer, models
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<eos>": 0, **{f"w{i}": i for i in range(1, TINY_VOCAB)}}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<eos>")),
                                        eos_token="<eos>")
    config = GPT2Config(vocab_size=TINY_VOCAB, n_positions=512, n_embd=256, n_layer=4, n_head=4,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config), tokenizer, "tiny GPT-2 (4 layers, n_embd 256)"


def random_blocks(n_blocks: int, block_size: int, vocab_size: int, avoid: int, seed: int):
    """Random token blocks without the pad token (the collator would mask it in one path only)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size - 1, (n_blocks, block_size), generator=generator)
    ids[ids >= avoid] += 1
    return ids


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def step_seconds(times: list[float]) -> list[float]:
    """Durations of the steps after the first (the first one allocates the optimizer state)."""
    return [end - start for start, end in zip(times, times[1:])]


def run_trainer(model, tokenizer, blocks, settings, steps: int, batch_size: int):
    """Step end times, and the optimizer class and arguments this ``Trainer`` used."""
    rows = {"input_ids": blocks.tolist(), "labels": blocks.tolist()}
    data = DatasetDict({"train": Dataset.from_dict(rows), "validation": Dataset.from_dict(rows)})
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(model, tokenizer, data, settings, output_dir, max_steps=steps,
                                per_device_train_batch_size=batch_size,
                                gradient_accumulation_steps=1, eval_strategy="no",
                                eval_on_start=False, save_strategy="no", logging_steps=steps,
                                logging_first_step=False, disable_tqdm=True)
        trainer.add_callback(timer)
        trainer.train()
    return timer.times, Trainer.get_optimizer_cls_and_kwargs(trainer.args, model)


def run_plain_loop(model, blocks, optimizer_cls, optimizer_kwargs, steps: int, batch_size: int,
                   bf16: bool) -> list[float]:
    """Forward (under bf16 autocast if ``bf16``), backward, optimizer step, zero_grad: nothing else."""
    optimizer = optimizer_cls(model.parameters(), **optimizer_kwargs)
    model.train()
    times = []
    for step in range(steps):
        batch = blocks[step * batch_size:(step + 1) * batch_size]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    return times


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="optimiser steps per path (≥ 2)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds per path, alternating which path goes first")
    parser.add_argument("--tiny", action="store_true", help="a tiny GPT-2 instead of the resolved model")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is warm-up)")
    return args


def measure(args, gflops: float | None = None) -> dict:
    """Run both paths; the numbers of the table as a dict (``gflops`` measured here if not given)."""
    settings = get_settings()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(cpu_threads())  # as build_trainer does
    set_seed(settings.seed)
    precision = mixed_precision(settings.precision, "cpu") or "fp32"
    gflops = gflops or matmul_gflops()
    train_gflops = matmul_gflops(precision="bf16") if precision == "bf16" else gflops
    if args.tiny:
        base_model, tokenizer, model_name = tiny_model_and_tokenizer()
    else:
        from ragft_helpers.assets import load_causal_lm

        resolved = load_causal_lm(settings)
        base_model, tokenizer, model_name = resolved.model, resolved.tokenizer, resolved.provenance.name
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    blocks = random_blocks(args.steps * args.batch_size, args.block_size,
                           base_model.config.vocab_size, pad_id, settings.seed)
    parameters = count_parameters(base_model)[1]
    limit = train_gflops * 1e9 / (6 * parameters)
    tokens_per_step = args.batch_size * args.block_size

    trainer_name, plain_name = "Trainer (`build_trainer`)", "plain PyTorch loop"
    durations: dict[str, list[float]] = {trainer_name: [], plain_name: []}
    optimizer_cls = optimizer_kwargs = None
    for round_index in range(args.rounds):  # alternate the order: a busy neighbour hits both
        order = [trainer_name, plain_name] if round_index % 2 == 0 else [plain_name, trainer_name]
        for name in order:
            set_seed(settings.seed)
            model = copy.deepcopy(base_model)
            if name == trainer_name:
                times, (optimizer_cls, optimizer_kwargs) = run_trainer(
                    model, tokenizer, blocks, settings, args.steps, args.batch_size)
            else:
                times = run_plain_loop(model, blocks, optimizer_cls, optimizer_kwargs, args.steps,
                                       args.batch_size, bf16=precision == "bf16")
            durations[name] += step_seconds(times)
            del model
            gc.collect()

    rates = {name: tokens_per_step / min(seconds) for name, seconds in durations.items()}
    optimizer = f"{optimizer_cls.__name__}({', '.join(f'{k}={v}' for k, v in optimizer_kwargs.items())})"
    return {"model": model_name, "parameters": parameters, "gflops": gflops, "limit": limit,
            "precision": precision, "train_gflops": train_gflops,
            "batch_size": args.batch_size, "block_size": args.block_size, "steps": args.steps,
            "rounds": args.rounds, "optimizer": optimizer, "load_before": load_before,
            "durations": durations, "rates": rates, "trainer": trainer_name, "plain": plain_name,
            "ratio": rates[trainer_name] / rates[plain_name], "target": TARGET_RATIO}


def report(r: dict) -> str:
    """The Markdown table of :func:`measure`'s results."""
    tokens_per_step = r["batch_size"] * r["block_size"]
    lines = [
        f"Model: {r['model']}, {r['parameters'] / 1e6:.1f}M parameters; batch {r['batch_size']} × "
        f"block {r['block_size']} = {tokens_per_step} tokens/step; {r['rounds']} rounds × "
        f"{r['steps']} steps per path, order alternating, fresh model copy each; fastest step, each "
        f"round's first step left out; optimizer {r['optimizer']} and {r['precision']} in both; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} cores ({platform.machine()}); "
        f"1-minute load average before the run {r['load_before']:.1f} (well above 0 means other "
        "work shared the cores).",
        "",
        f"{rate_record(r['precision'], r['train_gflops'])} → limit ≈ "
        f"GFLOP/s·1e9 / (6 × parameters) = **{r['limit']:,.0f} tokens/s**.",
        "",
        "| path | fastest step (s) | median step (s) | tokens/s (fastest) | fraction of limit |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, rate in r["rates"].items():
        steps = r["durations"][name]
        lines.append(f"| {name} | {min(steps):.2f} | {statistics.median(steps):.2f} "
                     f"| {rate:,.0f} | {rate / r['limit']:.0%} |")
    verdict = "met" if r["ratio"] >= r["target"] else "not met"
    lines += ["", f"Trainer / plain = **{r['ratio']:.2f}** (target ≥ {r['target']:.2f}: {verdict})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    table = report(measure(args))
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_training.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.output.write_text(f"# Training throughput\n\n`{command.strip()}`\n\n{table}\n")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
