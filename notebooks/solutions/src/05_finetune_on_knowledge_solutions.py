# %% [markdown]
# # 05 · Putting the knowledge base into the weights — solutions
#
# Worked solutions to the exercises of [notebook 05](../05_finetune_on_knowledge.ipynb), each
# with a checkpoint that fails when the effect the exercise describes does not hold, and answers
# to its questionnaire. The setup is the notebook's own: the same settings and training text, and
# the four variants, which `ensure_variants` reloads from the folders notebook 05 saved. The
# exercises that train (a higher step cap, other LoRA ranks) each train one variant once, in a
# folder of its own; a re-run of this notebook reloads them.

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
augmented = injection.training_texts(articles, questions, augmented=True)
runs = {r.name: r for r in injection.ensure_variants(settings)}  # reloads what notebook 05 saved
base = assets.load_causal_lm(settings, verbose=False)
kb_text = "\n\n".join(articles)
ppl_options = dict(max_length=profile.block_size, stride=profile.eval_stride,
                   max_tokens=profile.eval_max_tokens, progress=False)


def kb_perplexity(model):
    """Perplexity on the knowledge-base articles, the same tokens for every model (step 5)."""
    return lm.perplexity(model, base.tokenizer, kb_text, **ppl_options).perplexity


base_ppl = kb_perplexity(base.model)
print(f"variants: {list(runs)}; base model's KB-text perplexity {base_ppl:.2f}")

# %% [markdown]
# ## Exercise 1 — Train longer

# %%
longer_settings = settings.with_budgets(train_max_steps=4 * profile.train_max_steps)
longer = injection.ensure_variants(longer_settings, ["kb-full"])[0]
kb_full = injection.load_variant("kb-full", settings)
kb_full_ppl = kb_perplexity(kb_full.model)
del kb_full
gc.collect()
kb_full_longer = injection.load_variant("kb-full", longer_settings)
longer_ppl = kb_perplexity(kb_full_longer.model)
del kb_full_longer
gc.collect()
pd.DataFrame([
    {"model": "base", "steps": 0, "KB-text perplexity": base_ppl},
    {"model": "kb-full (step 5)", "steps": runs["kb-full"].steps, "KB-text perplexity": kb_full_ppl,
     "final loss": runs["kb-full"].final_loss},
    {"model": "kb-full, 4× the step cap", "steps": longer.steps, "KB-text perplexity": longer_ppl,
     "final loss": longer.final_loss}]).round(3)

# %%
# Checkpoints: the cap was what stopped training (4× the cap, 4× the steps), and the longer run
# finds the knowledge-base text clearly less surprising than kb-full of step 5.
assert runs["kb-full"].steps == profile.train_max_steps and longer.steps == 4 * profile.train_max_steps
assert longer_ppl < 0.9 * kb_full_ppl < base_ppl

# %% [markdown]
# The final loss is the loss of one batch of two blocks, so it moves with whichever blocks came
# last; the perplexity over the same 2,000-odd tokens for both models is the robust measurement.

# %% [markdown]
# ## Exercise 2 — LoRA rank 4 and 64

# %%
by_rank = {profile.lora_rank: runs["kb-lora"]}
for rank in (4, 64):
    by_rank[rank] = injection.ensure_variants(settings.with_budgets(lora_rank=rank), ["kb-lora"])[0]
ranks = pd.DataFrame([{"rank": rank, "trainable params": r.trainable_params,
                       "× rank 16": r.trainable_params / by_rank[16].trainable_params,
                       "first loss": r.first_loss, "final loss": r.final_loss,
                       "train s": r.train_seconds} for rank, r in sorted(by_rank.items())])
ranks.round(3)

# %%
# The same seed gives every rank the same batches in the same order, so the per-step losses can
# be compared step by step (runs saved before per-step losses were recorded have none).
step_losses = pd.DataFrame({f"rank {rank}": r.losses for rank, r in sorted(by_rank.items()) if r.losses})
step_losses.index += 1
step_losses.round(3).T

# %%
after_first = {rank: sum(r.losses[1:]) / len(r.losses[1:]) for rank, r in by_rank.items() if r.losses}
print("mean training loss after the first step:", {k: round(v, 3) for k, v in sorted(after_first.items())})
# Checkpoints: LoRA's trainable parameters are exactly proportional to the rank — a quarter at
# rank 4, four times at rank 64 — since each adapter is two matrices with `rank` rows or columns;
# and on the same batches the larger rank lowers the loss further.
assert profile.lora_rank == 16
for rank, r in by_rank.items():
    assert r.trainable_params * 16 == by_rank[16].trainable_params * rank, rank
assert after_first[64] < after_first[4]

# %% [markdown]
# Every rank starts from the same loss (the first step's loss is measured before the first
# update). After that, on the same batches, the larger rank fits them a little better at almost
# every step: `lora_alpha = 2 × rank` keeps the update's scale fixed, so a larger rank only adds
# directions the update can use. The gain is small next to the sixteen-fold difference in
# trainable parameters — a dozen steps cannot use much capacity — and whether it carries over to
# the knowledge-base text and to questions would need step 5's perplexity and notebook 08.

# %% [markdown]
# ## Exercise 3 — LoRA on the MLP projections too

# %%
from peft import LoraConfig, get_peft_model

from ragft_helpers.checkpoints import peft_deprecation_hidden

attention_only = injection.wrap_lora(assets.load_causal_lm(settings, verbose=False).model, 16)
attention_params = lm.count_parameters(attention_only)[0]
model_type = attention_only.config.model_type
del attention_only
if model_type == "gpt2":  # GPT-2's fused attention, its attention output and its MLP (Conv1D layers)
    config = LoraConfig(r=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
else:  # SmolLM2 and other Llama-type models, as the exercise writes it
    config = LoraConfig(r=16, target_modules=["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"])
with peft_deprecation_hidden():  # the deprecation peft triggers in transformers 5, and only it
    with_mlp = get_peft_model(assets.load_causal_lm(settings, verbose=False).model, config)
with_mlp.print_trainable_parameters()
mlp_params = lm.count_parameters(with_mlp)[0]
ratio = mlp_params / attention_params
print(f"attention only (step 3): {attention_params:,}; with the MLP: {mlp_params:,} ({ratio:.1f}×)")
del with_mlp
gc.collect()
# Checkpoint: about four times the trainable parameters of step 3.
assert 3.5 <= ratio <= 5

# %% [markdown]
# **Is it worth it?** The MLP layers hold most of a transformer's weights and, by most accounts,
# much of its stored factual knowledge, so adapting them is the natural choice when the goal is
# new *facts*; the adapter is still a few percent of the model (about 2–3% here) and a few MB more
# on disk. The price is about four times the adapter's parameters and optimiser state and a
# somewhat slower step. Whether it helps here is a measurement, not a given: train it with the
# same budget and compare KB-text perplexity (step 5) and, in notebook 08, the multiple-choice
# accuracy. At the smoke budget neither variant trains long enough for the difference to show.

# %% [markdown]
# ## Exercise 4 — A question that would leak

# %%
import dataclasses

leaky = dataclasses.replace(questions[0], question="The Tern Card has an annual fee of £25.00.")
found = injection.find_leaks([leaky], augmented)
print(f"leaks found: {found}")
# Checkpoints: the copied sentence is caught; the real question is not (nothing leaks today).
assert found == [questions[0].id]
assert injection.find_leaks([questions[0]], augmented) == []

# %% [markdown]
# `find_leaks` normalises case and punctuation and looks for the whole question, word for word,
# in every training row: a sentence copied from an article is found; a paraphrase is not, by
# design — stating a fact differently is the point of augmentation.

# %% [markdown]
# ## Questionnaire answers
# 1. **Continued pre-training** keeps training the model with its original objective —
#    predicting the next token — on new raw text (here the 35 articles, optionally with
#    paraphrases), so the text's content ends up in the weights. The training text is prose
#    stating facts; the evaluation asks *questions* about those facts, which never appear in the
#    training text: the model has to answer from what it absorbed, not recall a string.
# 2. **Paraphrases** state each fact three more times in other words. A fact seen several ways is
#    absorbed better than one sentence seen once (Ovadia et al., EMNLP 2024). It is not leakage
#    because the paraphrases state facts, never the evaluation question; `find_leaks` checks
#    that no question occurs verbatim in any training row.
# 3. **LoRA** freezes every weight and learns, for each adapted projection, a low-rank update
#    `B·A` (rank `lora_rank`; A is `r × d_in`, B is `d_out × r`) added to its output. B starts at
#    zero, so training starts from the unchanged model, and the few new weights must move far from
#    there; hence a `lora_learning_rate_factor` (10×) larger learning rate than full fine-tuning,
#    which nudges weights that are already trained.
# 4. **Single-step losses** are the loss of one batch of two blocks: they depend on which blocks
#    that batch holds, so with a dozen steps the first and the last can differ by chance either
#    way. Step 5 measured perplexity on the knowledge-base articles — the same tokens for every
#    model — and how far each variant's logits moved from the base model's.
# 5. **Re-runs** compute the variant's folder name from a hash of everything its weights depend
#    on (training budgets, LoRA rank and learning-rate factor, base model, a fingerprint of the
#    training text); if that folder holds the saved run (`knowledge_run.json`), the variant is
#    reloaded. It trains again when any of those change (a new folder) or with `retrain=True`.
# 6. **Lower perplexity on the articles** shows the model assigns their *text* higher
#    probability — it fits the wording, the style, frequent phrases — not that it can retrieve a
#    fact when asked a question in other words, which needs the fact stored in a form the
#    question can reach. Notebook 08 measures that directly, with multiple-choice and free-form
#    questions.
