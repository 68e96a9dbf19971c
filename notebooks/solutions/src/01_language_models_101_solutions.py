# %% [markdown]
# # 01 · Language models 101 — solutions
#
# Worked solutions to the exercises of [notebook 01](../01_language_models_101.ipynb), each with a
# checkpoint that fails when the effect the exercise describes does not hold, and answers to its
# questionnaire. The setup is the notebook's own: the same settings, model and WikiText.

# %%
import math

import pandas as pd
import torch
from IPython.display import display

import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import assets, corpus, lm
from ragft_helpers.config import get_settings, set_seed

settings = get_settings()
set_seed(settings.seed)
resolved = assets.load_causal_lm(settings)
model, tokenizer = resolved.model, resolved.tokenizer
wikitext, wikitext_provenance = corpus.load_wikitext(settings)
print(f"{resolved.provenance.name}: vocabulary of {len(tokenizer):,} tokens; WikiText from "
      f"{wikitext_provenance.source}")

# %% [markdown]
# ## Exercise 1 — A word that costs four or more tokens

# %%
candidates = [" Quennick", " Orvanay", " Fennick Holm", " antidisestablishmentarianism",
              " photosynthesis", " Llanfairpwllgwyngyll", " electroencephalography"]
pieces = {word: list(lm.token_table(tokenizer, word)["covers"]) for word in candidates}
common = {word: len(lm.token_table(tokenizer, word)) for word in (" the", " ferry", " harbour", " capital")}
pd.DataFrame([{"word": word, "tokens": len(parts), "pieces": " | ".join(parts)}
              for word, parts in pieces.items()])

# %%
long_word = next(word for word, parts in pieces.items() if len(parts) >= 4)
print(f"{long_word!r} costs {len(pieces[long_word])} tokens: {pieces[long_word]}; common words: {common}")
# Checkpoints: a rare or technical word is split into four or more pieces that spell it exactly;
# common words cost one token each.
assert len(pieces[long_word]) >= 4 and "".join(pieces[long_word]) == long_word
assert all(n == 1 for n in common.values()), common

# %% [markdown]
# **Why it is split.** A BPE tokenizer's vocabulary holds the strings that were frequent in its
# training text: whole common words (with their leading space), frequent pieces of words, single
# characters. A word it rarely or never saw — a made-up name such as *Quennick*, a long technical
# term — has no entry of its own, so it is spelled out of the longest pieces the vocabulary has.
# Rare words therefore cost several tokens (more compute, and less of the context window), common
# words one.

# %% [markdown]
# ## Exercise 2 — "The capital of Scotland is", at temperature 1 and 0.5

# %%
prefix = "The capital of Scotland is"
at_1 = lm.next_token_distribution(model, tokenizer, prefix)
at_half = lm.next_token_distribution(model, tokenizer, prefix, temperature=0.5)
pd.DataFrame({"token": at_1["token"], "p at T=1": at_1["probability"],
              "p at T=0.5": at_half["probability"]}).round(4)

# %%
p1, p_half = at_1["probability"].to_numpy(), at_half["probability"].to_numpy()
print(f"most likely: {at_1['token'][0]!r}, p = {p1[0]:.3f} at T=1 and {p_half[0]:.3f} at T=0.5")
# Checkpoints: the same tokens in the same order; the top token's probability rises; and every
# probability at T=0.5 is the squared one, renormalised: p_i / p_0 becomes (p_i / p_0)².
assert list(at_half["id"]) == list(at_1["id"])
assert p_half[0] > p1[0]
assert all(math.isclose(p_half[i] / p_half[0], (p1[i] / p1[0]) ** 2, rel_tol=1e-3)
           for i in range(len(p1)))

# %% [markdown]
# **How confident is the model?** The table gives this run's number: the top token gets the
# largest share at T=1, but a good part of the mass is spread over other tokens (including
# continuations such as " the" that would lead to the same fact later). Dividing the logits by
# 0.5 doubles them, and `exp(2z) = exp(z)²`, so the softmax at T=0.5 is the squared
# probabilities, renormalised: the top token gains, every ratio to it is squared, and the order
# never changes.

# %% [markdown]
# ## Exercise 3 — When does sampled text fall apart?
# The widget calls `lm.decode_with`; here it is called directly for several settings and four
# seeds each. "Incoherent" is measured rather than eyeballed: the mean negative log-likelihood
# (nats per token) that the model itself, at temperature 1, gives the continuation. Fluent text
# scores a few nats; a string of random tokens scores close to `log(vocabulary)`, about 10.8.

# %%
prompt = "The ferry crossed the sound and"
max_new_tokens = settings.profile.max_new_tokens


def continuation_nll(prompt, continuation):
    """Mean negative log-likelihood per token of ``continuation`` after ``prompt`` (T = 1)."""
    n_prompt = len(tokenizer(prompt)["input_ids"])
    ids = tokenizer(prompt + continuation, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    nll = -log_probs[torch.arange(ids.size(1) - 1), ids[0, 1:]]
    return nll[n_prompt - 1:].mean().item()


settings_to_try = {
    "T=0.7, top-p 0.9": dict(temperature=0.7, top_p=0.9),
    "T=1.0": dict(temperature=1.0),
    "T=1.5": dict(temperature=1.5),
    "T=2.0": dict(temperature=2.0),
    "T=2.0, top-k 10": dict(temperature=2.0, top_k=10),
    "T=2.0, top-p 0.5": dict(temperature=2.0, top_p=0.5),
}
rows = []
for name, knobs in settings_to_try.items():
    for seed in (1, 2, 3, 4):
        text = lm.decode_with(model, tokenizer, prompt, lm.DecodingChoice("sampling", seed=seed, **knobs),
                              max_new_tokens=max_new_tokens)
        rows.append({"settings": name, "seed": seed, "nats per token": continuation_nll(prompt, text),
                     "continuation": text})
samples = pd.DataFrame(rows)
with pd.option_context("display.max_colwidth", 100):
    display(samples[samples["seed"] == 1])
incoherence = samples.groupby("settings", sort=False)["nats per token"].mean()
incoherence.round(2)

# %%
# Checkpoints: raising the temperature alone makes the text far less likely under the model
# (incoherent), and at the same high temperature a top-k or top-p cut brings it back.
assert incoherence["T=2.0"] > incoherence["T=0.7, top-p 0.9"] + 1
assert incoherence["T=2.0"] > incoherence["T=1.0"]
assert incoherence["T=2.0, top-k 10"] < incoherence["T=2.0"] - 0.5
assert incoherence["T=2.0, top-p 0.5"] < incoherence["T=2.0"] - 0.5

# %% [markdown]
# **Which knob matters most?** Temperature. Above about 1.5 the flattened distribution gives the
# long tail of unrelated tokens enough mass that a few of them get drawn, and each wrong token
# derails the rest. Top-k and top-p do not make text incoherent by themselves: they only remove
# the tail, which is why they rescue a high temperature.

# %% [markdown]
# ## Exercise 4 — A stride of half the block
# Step 5 of the notebook uses `eval_stride`; at the `smoke` and `laptop` profiles that is the whole
# block (windows do not overlap). Both strides are computed here on the same tokens.

# %%
import time

profile = settings.profile
timed = {}
for name, stride in (("whole block", profile.block_size), ("half the block", profile.block_size // 2)):
    start = time.perf_counter()
    result = lm.perplexity(model, tokenizer, wikitext["validation"], max_length=profile.block_size,
                           stride=stride, max_tokens=profile.eval_max_tokens, progress=False)
    timed[name] = {"stride": stride, "perplexity": result.perplexity, "windows": result.n_windows,
                   "tokens predicted": result.n_tokens, "seconds": time.perf_counter() - start}
strides = pd.DataFrame(timed).T
strides

# %%
whole, half = timed["whole block"], timed["half the block"]
print(f"half the stride: perplexity {whole['perplexity']:.2f} → {half['perplexity']:.2f}, "
      f"{half['windows'] / whole['windows']:.1f}× the windows, {half['seconds'] / whole['seconds']:.1f}× the time")
# Checkpoints: every token now has more context before it, so perplexity is lower; about twice
# the windows (forward passes), which is where the extra time goes.
assert half["perplexity"] < whole["perplexity"]
assert 1.8 <= half["windows"] / whole["windows"] <= 2.2

# %% [markdown]
# ## Exercise 5 — Comparing perplexity across tokenizers
# Perplexity is `exp(mean NLL per token)`, and "token" means something different for each
# tokenizer: GPT-2 and SmolLM2 cut the same text into different numbers of pieces, from
# vocabularies of different sizes. A model whose tokenizer makes more, smaller tokens predicts
# more, easier tokens and gets a lower per-token perplexity for the same text. To compare models
# with different tokenizers, normalise the *total* NLL by something both share — characters,
# bytes (bits per byte) or words — or compare each model only with itself, as notebook 02 does.
# Normalising this model's total NLL per word instead of per token shows how much the unit
# matters:

# %%
text = "\n\n".join(wikitext["validation"]["text"])
ids = tokenizer(text, return_tensors="pt", verbose=False).input_ids[0, :profile.eval_max_tokens]
scored_text = tokenizer.decode(ids)
per_token = lm.perplexity(model, tokenizer, scored_text, max_length=profile.block_size,
                          stride=profile.block_size, progress=False)
total_nll = per_token.mean_nll * per_token.n_tokens
words = len(scored_text.split())
per_word = math.exp(total_nll / words)
print(f"{per_token.n_tokens:,} tokens for {words:,} words ({per_token.n_tokens / words:.2f} per word): "
      f"perplexity {per_token.perplexity:.1f} per token, {per_word:.1f} per word")
# Checkpoint: this tokenizer makes more tokens than there are words, so the same total NLL is a
# higher "perplexity" per word than per token: the number depends on the unit.
assert per_token.n_tokens > words and per_word > 1.1 * per_token.perplexity

# %% [markdown]
# ## Questionnaire answers
# 1. **Token.** An entry of the tokenizer's fixed vocabulary — a word, a piece of a word, a
#    character or a byte — identified by an integer id; the model reads and predicts ids. `1,200`
#    is already several tokens (SmolLM2's tokenizer writes every digit as its own token); WikiText's
#    escape `1 @,@ 200` adds the ` @` and `@` markers and extra spaces around the comma, each a
#    token of its own, so the same number costs more (9 tokens instead of 6 with this tokenizer).
# 2. **Output per position.** A vector of logits, one real score per vocabulary entry, for the
#    token that comes next. The softmax exponentiates each score and divides by the sum,
#    `p_i = exp(z_i) / Σ_j exp(z_j)`: positive numbers that add up to 1, in the same order as the
#    scores.
# 3. **Temperature below 1** divides the logits by T < 1, which stretches the gaps between them:
#    the distribution gets sharper — likely tokens gain, unlikely ones lose — while the order
#    stays the same (T = 0.5 squares the probabilities, then renormalises).
# 4. **Top 1 = greedy.** Top-k sampling with k = 1 keeps only the most likely token and
#    renormalises: it gets probability 1, whatever the temperature, so every draw is the argmax —
#    exactly what greedy decoding takes.
# 5. **Perplexity** is `exp` of the mean negative log-likelihood per predicted token: the number
#    of equally likely tokens the model is, on average, hesitating between. With overlapping
#    windows, tokens already scored by an earlier window are given label −100 (context only), so
#    each token is counted once. Counting the overlap twice would weight some tokens double —
#    and they are the ones scored with the most context, the easiest — so the perplexity would
#    come out too low, and it would change with the stride instead of measuring the model.
# 6. **Shuffled words** keep the text's vocabulary, word frequencies and tokenisation and lose
#    only the order, so the gap isolates what the model knows about language (syntax, context).
#    The vocabulary size is the score of a uniform guess, a bar so low that even a model that
#    only learned word frequencies would clear it easily.
