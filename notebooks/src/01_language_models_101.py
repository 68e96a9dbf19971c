# %% [markdown]
# # 01 · Language models 101
#
# Both halves of this workbook — fine-tuning and retrieval-augmented generation — change what a
# *language model* does. This notebook opens one up: text becomes tokens, the model scores every
# possible next token, a decoding strategy picks one, and perplexity measures how surprised the
# model is by real text.
#
# **Learning goals**
# - See how a tokenizer cuts text into tokens and ids, including WikiText's odd ` @-@ ` escapes.
# - Read a next-token probability distribution and see how temperature reshapes it.
# - Compare greedy decoding with sampling (temperature, top-k, top-p).
# - Compute perplexity on held-out WikiText, and check that it means something by comparing it
#   with the perplexity of the same words in a shuffled order.

# %% [markdown]
# ## Step 1 — The model, and where it came from

# %%
import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import assets, corpus, lm, viz, widgets
from ragft_helpers.config import get_settings, set_seed

settings = get_settings()
set_seed(settings.seed)
resolved = assets.load_causal_lm(settings)
model, tokenizer = resolved.model, resolved.tokenizer
trainable, total = lm.count_parameters(model)
print(f"{resolved.provenance.name}: {total / 1e6:.1f} M parameters, vocabulary of {len(tokenizer):,} tokens")

# %% [markdown]
# > **GPT-2 or SmolLM2?** With the hub reachable (or `ragft prefetch` run once), the workbook uses
# > GPT-2 (124 M parameters). Offline it uses the bundled SmolLM2-135M-Instruct, a model of the
# > same size and kind. Everything below works the same for both; the numbers differ.
#
# ## Step 2 — Tokenisation made visible
# A tokenizer maps text to integer ids from a fixed vocabulary. Frequent words get one token;
# rare words, numbers and symbols are split into pieces.

# %%
sentence = "The state @-@ of @-@ the @-@ art ferry carries 1 @,@ 200 passengers across the sound."
tokens = lm.token_table(tokenizer, sentence)
tokens.T

# %%
print(f"{len(sentence.split())} whitespace words → {len(tokens)} tokens")
print("displayed text:", corpus.undo_escapes(sentence))
# Checkpoint: the tokens cover the sentence exactly, in order.
assert "".join(tokens["covers"]).replace(" ", "") == sentence.replace(" ", "")
assert list(tokens["id"]) == tokenizer(sentence, add_special_tokens=False)["input_ids"]

# %% [markdown]
# WikiText writes `state-of-the-art` as `state @-@ of @-@ the @-@ art` and `1,200` as
# `1 @,@ 200`. The model has to learn those escapes during fine-tuning; for display,
# `corpus.undo_escapes` turns them back.
#
# ## Step 3 — Next-token probabilities
# Given a prefix, the model produces one score (logit) per vocabulary entry; a softmax turns them
# into probabilities. Dividing the logits by a *temperature* before the softmax sharpens
# (< 1) or flattens (> 1) the distribution.

# %%
import matplotlib.pyplot as plt

prefix = "The capital of France is"
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), sharex=True)
distributions = {}
for ax, temperature in zip(axes, (0.5, 1.0, 2.0)):
    distributions[temperature] = lm.next_token_distribution(model, tokenizer, prefix, top_n=10,
                                                            temperature=temperature)
    viz.plot_next_token_distribution(distributions[temperature], ax=ax,
                                    title=f"'{prefix} …' at temperature {temperature}")
fig.tight_layout()

# %%
top_token = distributions[1.0]["token"][0]
print(f"most likely next token: {top_token!r} with p = {distributions[1.0]['probability'][0]:.3f}")
# Checkpoints: a pretrained model knows this fact, and temperature reshapes the distribution.
assert "Paris" in "".join(distributions[1.0]["token"][:3])
assert distributions[0.5]["probability"][0] > distributions[1.0]["probability"][0] > distributions[2.0]["probability"][0]

# %% [markdown]
# ## Step 4 — Greedy decoding vs sampling
# *Greedy* decoding always takes the most likely token: repeatable, often repetitive. *Sampling*
# draws from the distribution; `top_k` keeps only the k most likely tokens, `top_p` the smallest
# set whose probability adds up to p.

# %%
import pandas as pd

prompt = "The ferry crossed the sound and"
choices = {
    "greedy": lm.DecodingChoice("greedy"),
    "sampling T=0.7, top-p 0.9": lm.DecodingChoice("sampling", temperature=0.7, top_p=0.9, seed=1),
    "sampling T=1.0, top-k 50": lm.DecodingChoice("sampling", temperature=1.0, top_k=50, seed=1),
    "sampling T=1.5 (seed 1)": lm.DecodingChoice("sampling", temperature=1.5, seed=1),
    "sampling T=1.5 (seed 2)": lm.DecodingChoice("sampling", temperature=1.5, seed=2),
}
max_new_tokens = settings.profile.max_new_tokens
samples = {name: lm.decode_with(model, tokenizer, prompt, choice, max_new_tokens=max_new_tokens)
           for name, choice in choices.items()}
pd.DataFrame({"strategy": list(samples), "continuation": list(samples.values())})

# %%
# Checkpoints: greedy is repeatable; sampling with different seeds explores different text.
assert lm.decode_with(model, tokenizer, prompt, choices["greedy"], max_new_tokens=max_new_tokens) == samples["greedy"]
assert samples["sampling T=1.5 (seed 1)"] != samples["sampling T=1.5 (seed 2)"]

# %% [markdown]
# Try it yourself: change the prompt and the sliders, then press *Generate*. The same seed with
# the same settings gives the same text.

# %%
widgets.sampling_widget(model, tokenizer, prompt, max_new_tokens=max_new_tokens)

# %% [markdown]
# ## Step 5 — Perplexity on held-out WikiText
# Perplexity is `exp(mean negative log-likelihood per token)`: the number of equally likely
# choices the model is, on average, hesitating between. Lower is better. We slide a window of
# `block_size` tokens over the validation text (stride from the profile) and count every predicted
# token once.

# %%
wikitext, wikitext_provenance = corpus.load_wikitext(settings)
base_ppl = lm.validation_perplexity(model, tokenizer, wikitext, settings)
print(f"perplexity {base_ppl.perplexity:.1f} over {base_ppl.n_tokens:,} tokens "
      f"({base_ppl.n_windows} windows of {settings.profile.block_size})")

# %% [markdown]
# Is that number good? A model guessing uniformly over its vocabulary would score the vocabulary
# size. A sharper test: shuffle the words of the same validation text. The words are identical,
# only the order is lost — so any drop in perplexity on the real text is what the model knows
# about *language*, not about individual words.

# %%
import random

validation_text = [line for line in wikitext["validation"]["text"] if line.strip()]
words = " ".join(validation_text).split()
random.Random(settings.seed).shuffle(words)
shuffled_ppl = lm.perplexity(model, tokenizer, [" ".join(words)],
                                   max_length=settings.profile.block_size,
                                   stride=settings.profile.eval_stride,
                                   max_tokens=settings.profile.eval_max_tokens)
comparison = pd.DataFrame([
    {"text": "WikiText validation", "perplexity": base_ppl.perplexity, "tokens": base_ppl.n_tokens},
    {"text": "same words, shuffled", "perplexity": shuffled_ppl.perplexity, "tokens": shuffled_ppl.n_tokens},
    {"text": "uniform guess (vocabulary size)", "perplexity": float(len(tokenizer)), "tokens": None},
])
comparison

# %%
# Checkpoints: the model beats a uniform guess by far, and word order matters to it.
assert base_ppl.perplexity < len(tokenizer) / 10
assert base_ppl.perplexity < shuffled_ppl.perplexity
print(f"shuffling the words raises perplexity {shuffled_ppl.perplexity / base_ppl.perplexity:.1f}×")

# %% [markdown]
# ## Summary
# - A tokenizer turns text into ids; rare strings such as WikiText's escapes cost several tokens.
# - The model outputs a probability for every possible next token; temperature reshapes it.
# - Greedy decoding is repeatable; sampling trades repeatability for variety, controlled by
#   temperature, top-k and top-p.
# - Perplexity measured on held-out text is the yardstick notebook 02 uses to show what
#   fine-tuning changes: the shuffled-text comparison above shows it measures knowledge of
#   language, not just of words.
#
# ## Exercises
# 1. Find a word that the tokenizer splits into four or more tokens. Why is it split?
# 2. Look at the next-token distribution after `"The capital of Scotland is"`. How confident is
#    the model, and does temperature 0.5 change the top token?
# 3. With the widget, find settings that make the continuation incoherent. Which knob matters most?
# 4. Compute perplexity with `stride` equal to half the block size. Why does it go down, and why
#    does the evaluation take longer?
# 5. Perplexity depends on the tokenizer. Why can you not compare GPT-2's perplexity directly
#    with SmolLM2's?
