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
# - Compare full fine-tuning with LoRA: trainable parameters, time, tokens, memory, final loss.
# - Save every variant by name, so the showdown (notebook 08) can load it without re-training.

# %%
import pandas as pd

import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import assets, qa, injection
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
lora_preview = injection.wrap_lora(assets.load_causal_lm(settings).model, settings.profile.lora_rank)
print(f"LoRA rank {settings.profile.lora_rank}, learning rate ×{settings.profile.lora_learning_rate_factor:g}")
lora_preview.print_trainable_parameters()
del lora_preview

# %% [markdown]
# ## Step 4 — Train (or reload) the four variants
# `ensure_variants` trains each variant that is not saved yet in `RAGFT_CACHE_DIR/finetuned/<profile>/`
# and saves it there by name: the full models as a plain checkpoint, the LoRA variants as an
# adapter only. A rerun reloads what is already saved, with the numbers measured when it was
# trained; `retrain=True` trains again.

# %%
runs = injection.ensure_variants(settings)
costs = pd.DataFrame([{
    "variant": r.name, "method": "LoRA" if r.lora else "full", "paraphrases": r.augmented,
    "trainable params": r.trainable_params, "trainable %": 100 * r.trainable_params / r.total_params,
    "steps": r.steps, "tokens seen": r.tokens_seen, "train seconds": round(r.train_seconds, 1),
    "peak RSS MB": round(r.peak_memory_mb), "first loss": round(r.first_loss, 3),
    "final loss": round(r.final_loss, 3)} for r in runs])
costs

# %%
# Checkpoint: every variant is saved by name, and LoRA trains a small fraction of the weights.
for r in runs:
    assert injection.variant_run(r.name, settings) == r
assert all(r.trainable_params < 0.05 * r.total_params for r in runs if r.lora)

# %% [markdown]
# The first and final losses are single-step losses on different batches, so with a dozen steps
# they are noisy — a rise does not mean training failed. The showdown (notebook 08) measures the robust signal:
# perplexity on the knowledge-base text before and after.

# %%
for r in runs:
    change = "fell" if r.final_loss < r.first_loss else "did NOT fall"
    print(f"{r.name}: training loss {r.first_loss:.3f} → {r.final_loss:.3f} ({change})")

# %% [markdown]
# ## Step 5 — Loading a variant by name
# The showdown (notebook 08) will load these by name. A LoRA variant is the base model plus its adapter,
# `PeftModel.from_pretrained(base, folder)`.

# %%
reloaded = injection.load_variant("kb-lora", settings)
print(reloaded.provenance.line())
print(type(reloaded.model).__name__)

# %% [markdown]
# ## Summary
# - Continued pre-training puts knowledge-base text into the weights; paraphrases add each fact
#   several times in different words.
# - The leakage check shows the evaluation questions themselves never reach the training text.
# - LoRA trains well under 5% of the parameters and saves a few-MB adapter instead of a whole
#   model; full fine-tuning updates everything. The cost table has this run's time, tokens and
#   memory.
# - Whether any of this taught the model the facts is the showdown's question (notebook 08).
#
# ## Exercises
# 1. Raise the epochs: `injection.ensure_variants(settings.with_budgets(kb_train_epochs=4.0))` trains
#    the variants anew (their folders are keyed by the settings). How do the final losses move?
# 2. Change the LoRA rank to 4 and to 64:
#    `injection.ensure_variants(settings.with_budgets(lora_rank=4), ["kb-lora"])`. How do trainable
#    parameters and loss change?
# 3. Add LoRA to the MLP projections too (`gate_proj`, `up_proj`, `down_proj`). Is it worth it?
# 4. Write a question that *would* leak (copy a sentence from an article) and check that
#    `find_leaks` catches it.
