# %% [markdown]
# # 05 · Putting the knowledge base into the weights
#
# Notebook 04 answered questions by *reading* the knowledge base at question time. The other way
# to give a model new knowledge is to train it on that text: **continued pre-training** on the
# articles, so the facts end up in the weights. This notebook trains four variants and measures
# what each costs; the showdown (notebook 08) measures what each knows.
#
# **Learning goals**
# - Turn articles into training blocks (one document per article, separated by EOS).
# - Augment the training text with paraphrases of the facts, as knowledge-injection studies do.
# - Prove that no evaluation question leaked into the training text.
# - Compare full fine-tuning with LoRA: trainable parameters, time, tokens, memory, loss curves.
# - Check that every variant changed and learned the text: its outputs differ from the base
#   model's, and its perplexity on the articles falls.
# - Save every variant by name, so the showdown (notebook 08) can load it without re-training.

# %%
import gc

import pandas as pd

import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import assets, injection, lm, qa
from ragft_helpers.config import get_settings, set_seed

settings = get_settings()
set_seed(settings.seed)
profile = settings.profile
articles = injection.article_texts()
questions = qa.load_questions()
print(f"{len(articles)} articles, {len(questions)} questions; profile {profile.name}: "
      f"block {profile.block_size} tokens, batch {profile.train_batch_size}, "
      f"{profile.kb_train_epochs:g} epochs capped at {profile.train_max_steps} steps")

# %% [markdown]
# ## Step 1 — The training text
# Variant (a) trains on the 35 articles alone. Variant (b) adds the question set's
# **paraphrases**: each answerable question comes with three sentences stating its fact in other
# words. Facts stated several ways are easier to absorb (Ovadia et al., EMNLP 2024). The
# paraphrases of the "updated" questions are kept: they state the *pre-update* fact, as the
# articles do — which is exactly what will make the fine-tuned model stale in the showdown (notebook 08).
# Unanswerable questions contribute nothing.

# %%
plain = injection.training_texts(articles, questions, augmented=False)
augmented = injection.training_texts(articles, questions, augmented=True)
pd.DataFrame([{"variant": "articles", "rows": len(plain), "words": sum(len(t.split()) for t in plain)},
              {"variant": "articles + paraphrases", "rows": len(augmented),
               "words": sum(len(t.split()) for t in augmented)}])

# %%
print("\n".join(augmented[len(articles):len(articles) + 4]))

# %% [markdown]
# ## Step 2 — Leakage check
# If an evaluation question appeared in the training text, a fine-tuned model could score by
# memorising it. `find_leaks` looks for every question, normalised, verbatim in every training
# row. Paraphrases state facts; they never repeat the question.

# %%
leaks = injection.find_leaks(questions, augmented)
print(f"questions found verbatim in the training text: {leaks}")

# %%
# Checkpoint: no evaluation question appears in any training text.
assert leaks == []

# %% [markdown]
# ## Step 3 — Full fine-tuning or LoRA
# **Full fine-tuning** updates every weight. **LoRA** freezes them and learns a low-rank update
# `B·A` (rank `lora_rank`, a profile budget) for the attention projections (`q_proj`/`v_proj` on Llama-type models such as
# SmolLM2, `c_attn` on GPT-2), a tiny fraction of the parameters. LoRA trains at a `lora_learning_rate_factor`× larger
# learning rate, since its few new weights start at zero.
#
# **Budget.** The step count is `kb_train_epochs × blocks ÷ batch`, **capped at the profile's
# `train_max_steps`** so the CPU run stays short: in the smoke profile all four runs take a few
# minutes on 2 cores, which is far too little training for the facts to stick. The laptop and
# full profiles train longer; the numbers below are this run's.

# %%
base_model = assets.load_causal_lm(settings).model  # prints where the model came from, once
lora_preview = injection.wrap_lora(base_model, settings.profile.lora_rank)
lora_preview.print_trainable_parameters()
del lora_preview, base_model  # wrapping changed the model in place; variants load their own
gc.collect()
print(f"LoRA rank {settings.profile.lora_rank}, learning rate ×{settings.profile.lora_learning_rate_factor:g}")

# %% [markdown]
# ## Step 4 — Train (or reload) the four variants
# `ensure_variants` trains each variant that is not saved yet in `RAGFT_CACHE_DIR/finetuned/<profile>/`
# and saves it there by name: the full models as a plain checkpoint, the LoRA variants as an
# adapter only. A rerun reloads what is already saved, with the numbers measured when it was
# trained; `retrain=True` trains again. Each training shows a progress bar; the loss of every
# step is kept with the run and plotted below.

# %%
runs = injection.ensure_variants(settings)
costs = pd.DataFrame([{
    "variant": r.name, "method": "LoRA" if r.lora else "full", "paraphrases": r.augmented,
    "trainable params": r.trainable_params, "trainable %": 100 * r.trainable_params / r.total_params,
    "steps": r.steps, "tokens seen": r.tokens_seen, "train seconds": round(r.train_seconds, 1),
    "peak RSS MB": round(r.peak_memory_mb), "first loss": round(r.first_loss, 3),
    "final loss": round(r.final_loss, 3)} for r in runs])
costs

# %% [markdown]
# **Re-running is safe.** The same call again finds every variant saved with these settings and
# trains nothing: not one file in the variants' folders is written. (The first time you run this
# notebook, the cell above trains and this one reloads; every later time, both reload.)

# %%
from pathlib import Path


def files_written(folder: Path) -> dict:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


folders = {r.name: injection.variant_dir(injection.VARIANT_BY_NAME[r.name],
                                         injection.training_texts(articles, questions, r.augmented),
                                         settings) for r in runs}
before = {name: files_written(folder) for name, folder in folders.items()}
again = injection.ensure_variants(settings)
# Checkpoints: the re-run returns the same measurements and writes nothing; every variant is
# saved (LoRA as an adapter only); LoRA trains a small fraction of the weights.
assert again == runs
assert {name: files_written(folder) for name, folder in folders.items()} == before
assert all(("adapter_model.safetensors" if r.lora else "model.safetensors") in before[r.name] for r in runs)
assert all(r.trainable_params < 0.05 * r.total_params for r in runs if r.lora)

# %% [markdown]
# The first and final losses in the table are single-step losses on different batches, so with a
# dozen steps they are noisy — a rise does not mean training failed. The curves show every step;
# step 5 measures the robust signal, perplexity on the knowledge-base text.

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs), 3), sharey=True)
for ax, r in zip(axes, runs):
    # runs saved before per-step losses were recorded keep only the first and the last
    steps, losses = ((range(1, len(r.losses) + 1), r.losses) if r.losses
                     else ([1, r.steps], [r.first_loss, r.final_loss]))
    ax.plot(steps, losses, marker=".")
    ax.set_title(f"{r.name} ({'LoRA' if r.lora else 'full'})")
    ax.set_xlabel("optimiser step")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("training loss (nats per token)")
fig.tight_layout()

# %% [markdown]
# ## Step 5 — Did the weights change, and did they learn the text?
# Each variant is loaded by name, as the showdown (notebook 08) will load it: a full variant from
# its checkpoint, a LoRA variant as the base model plus its adapter,
# `PeftModel.from_pretrained(base, folder)`. Two measurements per variant, against the base model:
# how far its next-token scores (logits) on one sentence of the knowledge base moved, and its
# perplexity on the articles — the text it trained on, the same tokens for every model.

# %%
import torch

base = assets.load_causal_lm(settings, verbose=False)  # the same model as in step 3
kb_text = "\n\n".join(articles)
probe = base.tokenizer("The Tessaly Dawn can carry 412 passengers and 64 cars.", return_tensors="pt")
ppl_options = dict(max_length=profile.block_size, stride=profile.eval_stride,
                   max_tokens=profile.eval_max_tokens, progress=False)
with torch.no_grad():
    base_logits = base.model(**probe).logits
learned = [{"model": "base", "KB-text perplexity": lm.perplexity(base.model, base.tokenizer, kb_text,
                                                                 **ppl_options).perplexity,
            "largest logit change": 0.0}]
for r in runs:
    variant = injection.load_variant(r.name, settings)
    print(variant.provenance.line(), "—", type(variant.model).__name__)
    with torch.no_grad():
        change = (variant.model(**probe).logits - base_logits).abs().max().item()
    learned.append({"model": r.name, "KB-text perplexity": lm.perplexity(
        variant.model, base.tokenizer, kb_text, **ppl_options).perplexity, "largest logit change": change})
    del variant
    gc.collect()
learned = pd.DataFrame(learned).set_index("model")
learned

# %%
base_ppl = learned.loc["base", "KB-text perplexity"]
# Checkpoints: every variant computes something other than the base model does, and every variant
# finds the knowledge-base text less surprising than the base model does.
for r in runs:
    assert learned.loc[r.name, "largest logit change"] > 1e-3, f"{r.name} did not change the model"
    assert learned.loc[r.name, "KB-text perplexity"] < base_ppl, f"{r.name} did not learn the text"
print("KB-text perplexity change:", (learned["KB-text perplexity"] / base_ppl - 1).drop("base")
      .map("{:+.0%}".format).to_dict())

# %% [markdown]
# ## Summary
# - Continued pre-training puts knowledge-base text into the weights; paraphrases add each fact
#   several times in different words.
# - The leakage check shows the evaluation questions themselves never reach the training text.
# - LoRA trains well under 5% of the parameters and saves a few-MB adapter instead of a whole
#   model; full fine-tuning updates everything. The cost table has this run's time, tokens and
#   memory.
# - Every variant changed the model and lowered its perplexity on the articles (step 5): the
#   text went into the weights. Whether the *facts* did — can the model answer questions about
#   them — is the showdown's question (notebook 08).
#
# ## Exercises
# 1. Train longer: at the smoke profile every variant stops at the step cap, so raise the cap, for
#    one variant: `longer = injection.ensure_variants(settings.with_budgets(train_max_steps=4 *
#    profile.train_max_steps), ["kb-full"])` trains anew in its own folder (folders are keyed by
#    the settings; raising `kb_train_epochs` alone would change nothing under the cap). Then
#    measure it as in step 5, loading it with the same settings:
#    `injection.load_variant("kb-full", settings.with_budgets(train_max_steps=4 * profile.train_max_steps))`.
#    Expect a clearly lower KB-text perplexity than kb-full's in step 5; the single-step final
#    loss may not show it.
# 2. Change the LoRA rank to 4 and to 64:
#    `injection.ensure_variants(settings.with_budgets(lora_rank=4), ["kb-lora"])`. Expect the
#    trainable parameters to scale with the rank (a quarter, four times). How does the loss
#    change?
# 3. Count what LoRA on the MLP projections too would train:
#    `from peft import LoraConfig, get_peft_model`, then
#    `get_peft_model(assets.load_causal_lm(settings, verbose=False).model, LoraConfig(r=16,
#    target_modules=["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"])).print_trainable_parameters()`
#    (the module names of SmolLM2 and other Llama-type models; on GPT-2 use
#    `target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True`). Expect about four times
#    the trainable parameters of step 3. Is it worth it? (peft warns that a transformers
#    property is deprecated; `from ragft_helpers.checkpoints import peft_deprecation_hidden` and
#    `with peft_deprecation_hidden():` around the call hide exactly that warning, as the package
#    does.)
# 4. Write a question that *would* leak and check that `find_leaks` catches it:
#    `injection.find_leaks([dataclasses.replace(questions[0], question="The Tern Card has an
#    annual fee of £25.00.")], augmented)` (after `import dataclasses`). Expect
#    `[questions[0].id]`: the sentence is copied from an article.
#
# ## Questionnaire
# 1. What is continued pre-training, and how does its training text differ from the questions it
#    is evaluated on?
# 2. Why add paraphrases of each fact, and why is that not leakage?
# 3. What does LoRA train instead of the weights, and why does it use a larger learning rate?
# 4. Why are single-step losses a poor sign of progress, and what did step 5 measure instead?
# 5. How does a re-run know that a variant is already trained, and when does it train again?
# 6. A lower perplexity on the articles does not prove the model can answer questions about
#    them. Why not?
