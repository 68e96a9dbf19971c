# %% [markdown]
# # 02 · Fine-tuning GPT-2 on WikiText — solutions
#
# Worked solutions to the exercises of [notebook 02](../02_finetune_gpt2_wikitext.ipynb), each
# with a checkpoint that fails when the effect the exercise describes does not hold, and answers
# to its questionnaire. The setup is the notebook's own: the same settings, model and WikiText,
# and step 5's run, which `finetune_on_wikitext` reloads from its folder instead of training.
# The two exercises that train (a doubled step budget, a higher learning rate) each train once in
# a run folder of their own; a re-run of this notebook reloads them too.

# %%
import gc

import matplotlib.pyplot as plt
import pandas as pd

import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import assets, corpus, finetune_wikitext, lm
from ragft_helpers.config import get_settings, set_seed

settings = get_settings()
set_seed(settings.seed)
base = assets.load_causal_lm(settings)
wikitext, wikitext_provenance = corpus.load_wikitext(settings)
tokenizer = lm.ensure_pad_token(base.tokenizer)
ppl_before = lm.validation_perplexity(base.model, tokenizer, wikitext, settings, progress=False)
run = finetune_wikitext.finetune_on_wikitext(settings, verbose=False)  # step 5's run, reloaded
ppl_after = lm.validation_perplexity(run.model, tokenizer, wikitext, settings, progress=False)
print(f"step 5's run: {run.train_output.global_step} steps in {run.trainer.args.output_dir}; "
      f"perplexity {ppl_before.perplexity:.2f} → {ppl_after.perplexity:.2f}")

# %% [markdown]
# ## Exercise 1 — Double the step budget

# %%
longer = finetune_wikitext.finetune_on_wikitext(settings, max_steps=2 * settings.profile.train_max_steps,
                                                verbose=False)
ppl_longer = lm.validation_perplexity(longer.model, tokenizer, wikitext, settings, progress=False)
print(f"{longer.train_output.global_step} steps in {longer.trainer.args.output_dir}")
pd.DataFrame([
    {"model": "base", "steps": 0, "perplexity": ppl_before.perplexity},
    {"model": "step 5's run", "steps": run.train_output.global_step, "perplexity": ppl_after.perplexity},
    {"model": "twice the steps", "steps": longer.train_output.global_step, "perplexity": ppl_longer.perplexity}])

# %%
ax = longer.history.plot(x="step", y="train_loss", marker=".", label="training loss")
longer.history.dropna(subset=["eval_loss"]).plot(x="step", y="eval_loss", marker="o", ax=ax,
                                                 label="validation loss")
ax.set_title(f"{2 * settings.profile.train_max_steps} steps")
plt.show()
evals = longer.history.dropna(subset=["eval_loss"])["eval_loss"].tolist()
print("validation loss at each evaluation:", [round(v, 3) for v in evals])

# %%
# Checkpoints: a run folder of its own, trained to twice the steps; validation perplexity keeps
# falling past step 5's run, and the validation loss falls at every evaluation (no over-fitting).
assert longer.trainer.args.output_dir != run.trainer.args.output_dir
assert longer.train_output.global_step == 2 * settings.profile.train_max_steps
assert ppl_longer.perplexity < ppl_after.perplexity
assert all(later < earlier for earlier, later in zip(evals, evals[1:])), evals
del longer
gc.collect()

# %% [markdown]
# At these budgets the model has seen a tiny fraction of WikiText once, so every step still
# teaches it something general and validation perplexity keeps falling. Over-fitting would show
# as the validation loss turning up while the training loss keeps going down — on a small
# corpus after many epochs, not after a few dozen steps.

# %% [markdown]
# ## Exercise 2 — A learning rate of 1e-3

# %%
fast = finetune_wikitext.finetune_on_wikitext(settings.with_budgets(learning_rate=1e-3), verbose=False)
curves = pd.concat([run.history.assign(run=f"learning rate {settings.profile.learning_rate:g} (step 5)"),
                    fast.history.assign(run="learning rate 1e-3")])
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), sharex=True)
for name, history in curves.groupby("run"):
    history.dropna(subset=["train_loss"]).plot(x="step", y="train_loss", marker=".", ax=axes[0], label=name)
    history.dropna(subset=["eval_loss"]).plot(x="step", y="eval_loss", marker="o", ax=axes[1], label=name)
axes[0].set_title("training loss")
axes[1].set_title("validation loss")
plt.show()
curves.pivot_table(index="step", columns="run", values=["train_loss", "eval_loss"]).round(3)

# %%
default_train = run.history.dropna(subset=["train_loss"]).set_index("step")["train_loss"]
fast_train = fast.history.dropna(subset=["train_loss"]).set_index("step")["train_loss"]
default_eval = run.history.dropna(subset=["eval_loss"])["eval_loss"]
fast_eval = fast.history.dropna(subset=["eval_loss"])["eval_loss"]
early = default_train.index[1]  # the first logged step after the first update
print(f"training loss at step {early}: {default_train[early]:.3f} (default) vs {fast_train[early]:.3f} (1e-3); "
      f"final validation loss {default_eval.iloc[-1]:.3f} vs {fast_eval.iloc[-1]:.3f}")
# Checkpoints: its own run folder; the larger steps overshoot — the training loss is higher after
# the first updates, and the validation loss ends higher than with the default rate.
assert fast.trainer.args.output_dir != run.trainer.args.output_dir
assert fast_train[early] > default_train[early]
assert fast_eval.iloc[-1] > default_eval.iloc[-1]
del fast
gc.collect()

# %% [markdown]
# Ten times the step size makes every update ten times bigger, further than the gradient can be
# trusted: the weights jump past the direction that lowered the loss, so even the loss on the
# batches it trains on is higher after the first updates, and the validation loss ends higher.
# A rate only a few times the default sits near the edge: at 5e-4 the training loss falls faster
# at first, and whether the validation loss ends higher or lower depends on the text (higher on
# the real WikiText, slightly lower on the small fallback corpus, at the smoke profile).

# %% [markdown]
# ## Exercise 3 — The run folder

# %%
import json
from pathlib import Path

folder = Path(run.trainer.args.output_dir)
recorded = json.loads((folder / "settings.json").read_text())
kept = sorted((p.name for p in folder.glob("checkpoint-*")), key=lambda name: int(name.split("-")[1]))
print(folder)
print("kept checkpoints:", kept)
pd.Series(recorded, name="settings.json").to_frame()

# %%
profile = settings.profile
saved_steps = list(range(profile.eval_steps, profile.train_max_steps + 1, profile.eval_steps))
# Checkpoints: settings.json records exactly what the folder's key is made of (the training
# budgets, the base model and the data), and only the last checkpoint is kept, without the
# optimizer's state once training has finished.
assert recorded == json.loads(json.dumps(finetune_wikitext.run_spec(settings, *run.provenance), default=str))
assert kept == [f"checkpoint-{saved_steps[-1]}"]
assert run.trainer.args.save_total_limit == 1
assert not any((folder / kept[-1]).glob("optimizer.*"))

# %% [markdown]
# `settings.json` records the training budgets (steps, batch and block size, learning rate,
# optimiser, warm-up, the cap on training text), the seed, and the base model and data set with
# where each came from; the folder name ends in a hash of exactly these, so a change to any of
# them trains in a new folder. A checkpoint is saved at every evaluation (every `eval_steps`);
# `save_total_limit=1` deletes all but the last. While a run is unfinished that checkpoint holds
# everything needed to resume (the optimizer's moments, the schedule, the random-number states);
# once the run reaches its last step those are deleted (`training.RESUME_ONLY_FILES`): the weights
# and the log are all a re-run needs to reload it, and AdamW's moments alone are twice the model's
# size.

# %% [markdown]
# ## Exercise 4 — Why the same tokens before and after

# %%
print(f"before: {ppl_before.n_tokens:,} tokens in {ppl_before.n_windows} windows; "
      f"after: {ppl_after.n_tokens:,} tokens in {ppl_after.n_windows} windows")
# Checkpoint: both perplexities average over exactly the same predicted tokens.
assert (ppl_before.n_tokens, ppl_before.n_windows) == (ppl_after.n_tokens, ppl_after.n_windows)

# %% [markdown]
# Perplexity is an average per token, so it is only comparable over the same tokens: another
# tokenizer cuts the text into a different number of differently sized pieces (exercise 5 of
# notebook 01), another text or another budget has easier or harder passages, and another window
# or stride gives each token more or less context. Fine-tuning does not change the tokenizer, so
# measuring both models with the base tokenizer on the same text, budget and windows leaves the
# weights as the only difference.

# %% [markdown]
# ## Exercise 5 — A ferry company that does not exist

# %%
prompt = [" Quennick Sound Ferries sails from"]
fine_tuned_text = lm.generate(run.model, tokenizer, prompt, max_new_tokens=30)[0]
base_model = assets.load_causal_lm(settings, verbose=False).model
base_text = lm.generate(base_model, tokenizer, prompt, max_new_tokens=30)[0]
print("base:      ", base_text)
print("fine-tuned:", fine_tuned_text)
real_places = ["Marlstow", "Kettlebay", "Port Ellisay", "Saltgarth", "Orvanay", "Fennick Holm",
               "Dunmarrow", "Tessaly Dawn", "Corrie Wren", "Gannet Reach", "Holm Lantern"]
# Checkpoints: both models write fluent text, and neither names one of the company's real ports,
# islands or ships: what they state is invented.
assert len(base_text.split()) >= 5 and len(fine_tuned_text.split()) >= 5
assert not [place for place in real_places if place in base_text + fine_tuned_text]

# %% [markdown]
# Fine-tuning on WikiText does not help: WikiText says nothing about Quennick Sound Ferries, so
# it only changes the *style* of the invention (encyclopedic tone, ` @-@ ` escapes). What would
# help is giving the model the company's own text — at question time by retrieval (notebooks 03
# and 04), or in the weights by fine-tuning on the knowledge base (notebook 05; notebook 08
# compares the two).

# %% [markdown]
# ## Questionnaire answers
# 1. **The three failures.** `TrainingArguments(evaluation_strategy=...)` fails because the
#    argument was renamed `eval_strategy`; `padding="max_length"` fails because GPT-2's tokenizer
#    has no pad token (fix: `tokenizer.pad_token = tokenizer.eos_token`, as
#    `lm.ensure_pad_token` does); a `Trainer` on tokenised text without labels fails because the
#    model returns no loss (fix: `labels = input_ids`, or
#    `DataCollatorForLanguageModeling(mlm=False)`, which builds them).
# 2. **Blocks vs padding.** Grouping concatenates all the text and cuts it into blocks of exactly
#    `block_size` tokens, so every position of every block is a real token the model learns from.
#    `padding="max_length"` pads every line — most WikiText lines are short, many empty — to the
#    maximum length, so most positions are padding: computed, then ignored by the loss.
# 3. **Labels.** With `labels = input_ids` the model learns to predict each token from the tokens
#    before it (next-token prediction): position t is scored on token t + 1. The model shifts the
#    labels by one itself inside its forward pass (the loss compares logits[:, :-1] with
#    labels[:, 1:]), so the data keeps them identical.
# 4. **A tiny slice first** catches broken data, labels or optimiser settings in seconds instead
#    of after minutes of training. Step 3 trained a fresh copy for two steps on four blocks and
#    asserted that two steps ran and that the loss *on those same blocks* fell.
# 5. **A fair comparison** needs everything but the weights held fixed: the same tokenizer, the
#    same held-out text (never trained on — step 2 checked no validation article is in the
#    training split), the same token budget and the same windows and stride, so both
#    perplexities average over the same tokens.
# 6. **A finished run.** The run folder is keyed by a hash of the training settings, model and
#    data (`settings.json`); `train` finds the last checkpoint there and, when its
#    `trainer_state.json` says `global_step` has reached `max_steps`, loads its weights instead of
#    training. Changing the learning rate changes the hash, so the run goes to a new folder and
#    trains from scratch; the old folder is kept.
