# %% [markdown]
# # 02 · Fine-tuning GPT-2 on WikiText
#
# Fine-tuning keeps training a pretrained model on new text, so that the *weights themselves*
# absorb its style and content. Here we fine-tune the workbook's causal language model (GPT-2
# when the hub is reachable, otherwise the bundled SmolLM2-135M) on WikiText-2 and measure what
# changed.
#
# **Learning goals**
# - See why the fine-tuning snippet that circulates in tutorials fails with today's libraries, and
#   what fixes each failure.
# - Turn raw text into training blocks with `datasets.map`: tokenise, concatenate, cut, label.
# - Train with `Trainer`, first on a tiny slice, then with the profile's budget; read the loss curve.
# - Show with numbers that fine-tuning worked: perplexity on held-out text before vs after.
# - Save the fine-tuned model where later notebooks find it.

# %%
import gc
import tempfile
import time

import pandas as pd

import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import (machine, assets, corpus, lm, training, checkpoints, finetune_wikitext, pitfalls, viz)
from ragft_helpers.config import get_settings, set_seed

settings = get_settings()
set_seed(settings.seed)
timings = {}
start = time.perf_counter()
base = assets.load_causal_lm(settings)
wikitext, wikitext_provenance = corpus.load_wikitext(settings)
timings["load model and data"] = time.perf_counter() - start
tokenizer = lm.ensure_pad_token(base.tokenizer)
print(f"profile {settings.profile.name}: {settings.profile.train_max_steps} steps × "
      f"{settings.profile.train_batch_size} blocks × {settings.profile.block_size} tokens, "
      f"{settings.profile.gradient_accumulation_steps} micro-batch(es) per step, "
      f"training precision {training.training_precision(settings)}")

# %% [markdown]
# ## Step 1 — Why the usual snippet fails as written
# Articles from 2023 fine-tune GPT-2 on WikiText with `GPT2Tokenizer.from_pretrained("gpt2")`,
# `padding="max_length"`, a `Trainer` without labels and `TrainingArguments(evaluation_strategy=...)`.
# Each line is run below against the installed libraries; the table shows what really happens.

# %%
scratch = tempfile.mkdtemp(prefix="ragft-pitfalls-")
pitfall_table = pitfalls.snippet_pitfalls(
    base.model, tokenizer, wikitext["train"]["text"][:2_000], scratch,
    max_length=min(tokenizer.model_max_length, 1024),
    hub_reachable=ragft_helpers.HUB_STATUS.reachable, hub_reason=ragft_helpers.HUB_STATUS.reason)
pd.set_option("display.max_colwidth", 120)
pitfall_table

# %%
# Checkpoint: the broken lines really break here (renamed argument, no pad token, no labels).
broken = set(pitfall_table.loc[pitfall_table["fails"], "snippet"])
assert any("evaluation_strategy" in s for s in broken)
assert any("padding" in s for s in broken)
assert any("no labels" in s for s in broken)

# %% [markdown]
# > **Why labels?** A causal LM learns to predict token *t+1* from tokens *1…t*. With
# > `labels = input_ids`, the model shifts the labels by one itself and returns the loss.
# > `DataCollatorForLanguageModeling(mlm=False)` builds those labels for every batch and sets the
# > labels of padding to -100 so the loss ignores them — which is why it needs a pad token.
#
# ## Step 2 — From raw text to training blocks
# `tokenize_and_group` drops blank lines, tokenises with a batched `datasets.map`, separates
# articles with the end-of-sequence token, concatenates everything and cuts it into blocks of
# `block_size` tokens. No block needs padding, and no token is wasted.

# %%
start = time.perf_counter()
lm_datasets = training.tokenize_and_group(wikitext, tokenizer, settings.profile.block_size)
timings["tokenize and group"] = time.perf_counter() - start
block_table = pd.DataFrame([
    {"split": split, "raw lines": len(wikitext[split]), "blocks": len(lm_datasets[split]),
     "tokens": len(lm_datasets[split]) * settings.profile.block_size}
    for split in ("train", "validation")])
block_table

# %%
first_block = lm_datasets["train"][0]
print(corpus.undo_escapes(tokenizer.decode(first_block["input_ids"]))[:600])
titles = {split: {corpus.article_title(line) for line in wikitext[split]["text"]} - {None}
          for split in ("train", "validation")}
print(f"{len(titles['train'])} training articles, {len(titles['validation'])} held-out articles")
# Checkpoints: every block is full length and its labels are its inputs; the validation text is
# held out — no validation article is also in the training split.
assert all(len(ids) == settings.profile.block_size for ids in lm_datasets["train"][:20]["input_ids"])
assert first_block["labels"] == first_block["input_ids"]
assert titles["validation"] and not titles["validation"] & titles["train"]

# %% [markdown]
# ## Step 3 — A run on a small slice first
# Before spending minutes, train a fresh copy for two steps on a few blocks. Two steps of
# `train_batch_size` blocks see every block of the slice once, so the loss *on those blocks* must
# fall — if the data, the labels or the optimiser are broken, this fails in seconds.

# %%
from datasets import DatasetDict

slice_model = assets.load_causal_lm(settings, verbose=False).model
slice_blocks = lm_datasets["train"].select(range(2 * settings.profile.train_batch_size))
tiny_slice = DatasetDict(train=slice_blocks, validation=slice_blocks)  # measured on what it trains on
slice_trainer = training.build_trainer(slice_model, tokenizer, tiny_slice, settings,
                                       tempfile.mkdtemp(prefix="ragft-slice-"), max_steps=2,
                                       eval_strategy="no", eval_on_start=False, save_strategy="no")
loss_before = slice_trainer.evaluate()["eval_loss"]
slice_output = slice_trainer.train()
loss_after = slice_trainer.evaluate()["eval_loss"]
# Checkpoint: two steps ran, and they lowered the loss on the blocks they trained on.
assert slice_output.global_step == 2 and loss_after < loss_before
del slice_model, slice_trainer
gc.collect()
print(f"slice run: {slice_output.global_step} steps; loss on the slice {loss_before:.3f} → {loss_after:.3f}")

# %% [markdown]
# ## Step 4 — The base model, measured before fine-tuning
# Perplexity on the held-out validation split, with the sliding window from notebook 01, and
# greedy continuations of a few prompts, to compare with the fine-tuned model in step 7.

# %%
start = time.perf_counter()
ppl_before = lm.validation_perplexity(base.model, tokenizer, wikitext, settings)
timings["perplexity (before)"] = time.perf_counter() - start
print(f"before: perplexity {ppl_before.perplexity:.2f} over {ppl_before.n_tokens:,} tokens")
prompts = [" = Valkyrie = \n\n The", " The river flows", " In 1998 , the band"]
generations = pd.DataFrame({"prompt": prompts, "before": lm.generate(
    base.model, tokenizer, prompts, max_new_tokens=settings.profile.max_new_tokens)})

# %% [markdown]
# > **Memory.** Training holds the weights, their gradients and the optimiser's state — AdamW
# > keeps two running averages per weight, so four copies of every parameter — plus the
# > activations of a batch. The base model is not needed any more, so it is freed before the
# > training runs. The `laptop` profile saves more: it uses Adafactor, which keeps row and column
# > statistics instead of a full second copy, and splits each batch of 4 blocks into
# > micro-batches of 1 (`micro_batch_size`) whose gradients are accumulated — the same update
# > with a quarter of the activation memory.
#
# > **Precision.** Where the hardware computes bfloat16 natively — GPUs, and CPUs with the
# > AVX512-BF16 or AMX instructions — the `Trainer` runs the matrix products in bf16 (*mixed
# > precision*, `bf16=True`): the weights and the optimiser's state stay fp32, and each step is
# > faster (`benchmarks/README.md` measures by how much). Elsewhere it trains in fp32;
# > `RAGFT_PRECISION=fp32` forces that. After training the model computes in fp32 again, so the
# > perplexities before and after are measured the same way.

# %%
base_name = base.provenance.name
del base
gc.collect()
print(f"freed the base model ({base_name}) before training")

# %% [markdown]
# ## Step 5 — Fine-tune with the profile's budget
# `finetune_on_wikitext` loads a fresh copy of the model, builds the `Trainer` (cosine schedule,
# evaluation every `eval_steps`, checkpoints with `save_total_limit=1`) and trains with a progress
# bar. Checkpoints live in the cache folder: a
# re-run of this notebook resumes from the last one instead of starting over.

# %%
run = finetune_wikitext.finetune_on_wikitext(settings, verbose=False)  # lines printed above
timings["fine-tune (incl. evaluations)"] = run.seconds
history = run.history
viz.plot_loss_curve(history).set_title(f"Fine-tuning {base_name} on WikiText")
history.tail()

# %%
evals = history.dropna(subset=["eval_loss"])
print(f"validation loss {evals['eval_loss'].iloc[0]:.3f} → {evals['eval_loss'].iloc[-1]:.3f} "
      f"after {run.train_output.global_step} steps")
# Checkpoint: the validation loss went down during training.
assert run.train_output.global_step == settings.profile.train_max_steps
assert evals["eval_loss"].iloc[-1] < evals["eval_loss"].iloc[0]
assert run.provenance[1] == wikitext_provenance  # trained on the WikiText loaded above

# %% [markdown]
# **Re-running is safe.** The same call again finds the finished run in its folder and loads the
# last checkpoint instead of training: nothing in the folder is written. (The first time you run
# this notebook, step 5 trains and this cell reloads; every later time, both reload.)

# %%
from pathlib import Path


def checkpoint_files(folder):
    """Every file of every checkpoint in ``folder``, with the time it was last written."""
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns
            for path in Path(folder).glob("checkpoint-*/*")}


written = checkpoint_files(run.trainer.args.output_dir)
again = finetune_wikitext.finetune_on_wikitext(settings, verbose=False)
# Checkpoint: the same folder, the finished step count, and not one checkpoint file rewritten.
assert again.trainer.args.output_dir == run.trainer.args.output_dir
assert again.train_output.global_step == settings.profile.train_max_steps
assert written and checkpoint_files(again.trainer.args.output_dir) == written
del again
gc.collect()
print(f"second call: reloaded, {len(written)} checkpoint files untouched")

# %% [markdown]
# ## Step 6 — Perplexity after fine-tuning

# %%
start = time.perf_counter()
ppl_after = lm.validation_perplexity(run.model, tokenizer, wikitext, settings)
timings["perplexity (after)"] = time.perf_counter() - start
perplexities = pd.DataFrame([
    {"model": f"{base_name} (base)", "perplexity": ppl_before.perplexity,
     "tokens evaluated": ppl_before.n_tokens},
    {"model": f"{base_name} fine-tuned on WikiText", "perplexity": ppl_after.perplexity,
     "tokens evaluated": ppl_after.n_tokens},
])
perplexities

# %%
change = 1 - ppl_after.perplexity / ppl_before.perplexity
print(f"fine-tuning lowered validation perplexity by {change:.1%} "
      f"({ppl_before.perplexity:.2f} → {ppl_after.perplexity:.2f})")
# Checkpoint: perplexity on held-out text must drop.
assert ppl_after.perplexity < ppl_before.perplexity

# %% [markdown]
# ## Step 7 — Generations before and after
# The prompts of step 4, greedy decoding, both models side by side. Look for WikiText's habits
# in the fine-tuned column: its heading style, ` @-@ ` escapes, encyclopedic tone.

# %%
generations["after"] = lm.generate(run.model, tokenizer, prompts,
                                         max_new_tokens=settings.profile.max_new_tokens)
generations

# %%
# Checkpoint: fine-tuning changed what the model writes.
assert (generations["before"] != generations["after"]).any()

# %% [markdown]
# ## Step 8 — Save the fine-tuned model for later notebooks

# %%
saved_to = checkpoints.save_finetuned(run.model, tokenizer, finetune_wikitext.WIKITEXT_FINETUNED, settings)
reloaded = checkpoints.load_finetuned(finetune_wikitext.WIKITEXT_FINETUNED, settings)
print(f"saved to {saved_to}")
sample = wikitext["validation"]["text"][:40]
check_options = dict(max_length=settings.profile.block_size, max_tokens=512, progress=False)
# Checkpoint: the reloaded model is the fine-tuned one, to the last digit that matters.
reloaded_ppl = lm.perplexity(reloaded.model, reloaded.tokenizer, sample, **check_options)
trained_ppl = lm.perplexity(run.model, tokenizer, sample, **check_options)
assert abs(reloaded_ppl.perplexity - trained_ppl.perplexity) < 1e-3 * trained_ppl.perplexity

# %% [markdown]
# ## Step 9 — What this run cost on this machine

# %%
import os

import torch

runtime = pd.DataFrame([{"stage": stage, "seconds": round(seconds, 1)}
                        for stage, seconds in timings.items()])
runtime.loc[len(runtime)] = {"stage": "total", "seconds": round(sum(timings.values()), 1)}
print(f"device: {machine.torch_device()}, {os.cpu_count()} cores, torch threads "
      f"{torch.get_num_threads()}, profile {settings.profile.name}, model {base_name}, "
      f"{run.train_output.global_step} steps × {settings.profile.train_batch_size} × "
      f"{settings.profile.block_size} tokens")
runtime

# %% [markdown]
# ## Summary
# - The tutorial snippet breaks on today's libraries in three ways — a renamed argument, a
#   tokenizer with no pad token, no labels — and wastes most of its compute on padding. Each fix is
#   one line in `ragft_helpers.finetune`.
# - Causal-LM data preparation is: drop blanks, tokenise, concatenate, cut into blocks, copy
#   `input_ids` to `labels`.
# - A short fine-tune lowered held-out perplexity (the table in step 6 has this run's numbers) and
#   changed the style of generated text: the weights absorbed the corpus.
# - What fine-tuning did *not* do is give the model a way to look facts up. Notebooks 03–04 take
#   the other route: retrieval.
#
# ## Exercises
# 1. Double the step budget:
#    `longer = finetune_wikitext.finetune_on_wikitext(settings, max_steps=2 * settings.profile.train_max_steps)`
#    trains anew in its own run folder, then
#    `lm.validation_perplexity(longer.model, tokenizer, wikitext, settings)`. Does validation
#    perplexity keep falling? At these small budgets expect it to; over-fitting would show as a
#    validation loss that rises while the training loss keeps falling (`longer.history`).
# 2. Change the learning rate to `1e-3`:
#    `finetune_wikitext.finetune_on_wikitext(settings.with_budgets(learning_rate=1e-3))`. It trains
#    anew in its own run folder (folders are keyed by the training settings). Compare its loss
#    curve with step 5's. At the smoke profile expect steps that large to overshoot: the training
#    loss is *higher* than with the default rate after the first updates, and the validation loss
#    ends higher too.
# 3. Open the run folder, `run.trainer.args.output_dir`. What does its `settings.json` record,
#    and which checkpoints are kept? (Expect only the last, `save_total_limit=1`, without the
#    optimizer state once the run has finished.)
# 4. The perplexity in step 6 uses the base model's tokenizer. Why must before and after be
#    measured on exactly the same tokens?
# 5. Prompt the fine-tuned model about a ferry company that does not exist:
#    `lm.generate(run.model, tokenizer, [" Quennick Sound Ferries sails from"], max_new_tokens=30)`,
#    then the base model (freed in step 4; reload it with
#    `assets.load_causal_lm(settings, verbose=False).model`). Expect fluent, invented details from
#    both. Does fine-tuning on WikiText help? What would?
#
# ## Questionnaire
# 1. Name the three ways the tutorial snippet fails with today's libraries, and the fix for each.
# 2. Why does grouping the text into full blocks waste no compute, where `padding="max_length"`
#    wasted most of it?
# 3. What does a causal LM learn from `labels = input_ids`, and who shifts the labels by one?
# 4. Why train on a tiny slice first, and what did step 3 check to show the training loop works?
# 5. What must hold for "perplexity before vs after" to be a fair comparison?
# 6. A re-run of step 5 trains nothing. How does the workbook know the run is finished, and what
#    changes when you change the learning rate?
