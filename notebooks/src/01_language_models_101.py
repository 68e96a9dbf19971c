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

# %% [markdown]
# **Build it, then use it.** `lm.next_token_distribution` is a few lines: one forward pass, the
# logits of the last position, divide by the temperature, softmax. Written out here, it must give
# exactly the probabilities plotted above.

# %%
import torch

encoded = tokenizer(prefix, return_tensors="pt")
with torch.no_grad():
    last_logits = model(**encoded).logits[0, -1].float()  # one score per vocabulary entry
for temperature, table in distributions.items():
    by_hand = torch.softmax(last_logits / temperature, dim=-1)
    top = torch.topk(by_hand, len(table))
    # Checkpoint: same tokens, same order, same probabilities as the package function.
    assert top.indices.tolist() == list(table["id"])
    assert torch.allclose(top.values, torch.tensor(list(table["probability"])), atol=1e-6)

top_token = distributions[1.0]["token"][0]
print(f"most likely next token: {top_token!r} with p = {distributions[1.0]['probability'][0]:.3f}")
# Checkpoint: a pretrained model knows this fact.
assert "Paris" in "".join(distributions[1.0]["token"][:3])

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
top_next = lm.next_token_distribution(model, tokenizer, prompt, top_n=1)["token"][0]
only_the_best = lm.DecodingChoice("sampling", temperature=1.5, top_k=1, seed=7)
again = lm.decode_with(model, tokenizer, prompt, choices["sampling T=1.5 (seed 1)"],
                       max_new_tokens=max_new_tokens)
print(f"most likely next token: {top_next!r}; greedy starts {samples['greedy'][:30]!r}")
# Checkpoints: greedy takes the most likely token; sampling from the top 1 token is greedy,
# whatever the temperature; a seed reproduces its sample, and another seed gives other text.
assert samples["greedy"].startswith(top_next)
assert lm.decode_with(model, tokenizer, prompt, only_the_best, max_new_tokens=max_new_tokens) == samples["greedy"]
assert again == samples["sampling T=1.5 (seed 1)"]
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
from ragft_helpers import wikitext as wikitext_sources

wikitext, wikitext_provenance = corpus.load_wikitext(settings)
print(f"validation split: {len(wikitext['validation']):,} lines")
# Checkpoint: the text is the one configured. The chain (hub or its cache, then
# RAGFT_WIKITEXT_DIR, then the fallback in the repo) must not fall through silently: a folder
# that is set is the one read, line for line.
if wikitext_provenance.source in (wikitext_sources.SOURCE_HUB, wikitext_sources.SOURCE_DATASETS_CACHE):
    assert wikitext_provenance.name == wikitext_sources.DATASET_NAME
    assert len(wikitext["validation"]) == 3_760  # the rows of WikiText-2's validation split
else:
    folder = settings.wikitext_dir or corpus.FALLBACK_DIR
    expected_source = (wikitext_sources.SOURCE_FOLDER if settings.wikitext_dir
                       else wikitext_sources.SOURCE_FALLBACK)
    assert (wikitext_provenance.source, wikitext_provenance.location) == (expected_source, str(folder))
    assert wikitext["validation"]["text"] == corpus.load_raw_folder(folder)[0]["validation"]

# %% [markdown]
# **Build it, then use it.** The sliding window, written out: join the validation lines, keep the
# first `eval_max_tokens` tokens, and run windows of `block_size` tokens that start every
# `eval_stride` tokens. Position *i* of a window predicts token *i + 1*; a token that an earlier
# window already scored is context only, so every token is counted once.

# %%
import math

ids = tokenizer("\n\n".join(wikitext["validation"]["text"]), return_tensors="pt",
                verbose=False).input_ids[0, :settings.profile.eval_max_tokens]
window, stride = settings.profile.block_size, settings.profile.eval_stride
total_nll, predicted, windows, scored_until = 0.0, 0, 0, 0
for begin in range(0, len(ids), stride):
    end = min(begin + window, len(ids))
    piece = ids[begin:end]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(piece[None]).logits[0, :-1].float(), dim=-1)
    nll = -log_probs[torch.arange(len(piece) - 1), piece[1:]]  # of tokens begin+1 … end-1
    new = torch.arange(begin + 1, end) >= scored_until  # not scored by an earlier window
    total_nll += nll[new].sum().item()
    predicted += int(new.sum())
    windows += 1
    scored_until = end
    if end == len(ids):
        break
by_hand = math.exp(total_nll / predicted)
print(f"by hand: perplexity {by_hand:.2f} over {predicted:,} tokens in {windows} windows")

# %% [markdown]
# Now the package function that later notebooks use, on the same text with the same budgets:

# %%
base_ppl = lm.validation_perplexity(model, tokenizer, wikitext, settings)
print(f"perplexity {base_ppl.perplexity:.2f} over {base_ppl.n_tokens:,} tokens "
      f"({base_ppl.n_windows} windows of {settings.profile.block_size})")
# Checkpoint: the package computes exactly what the loop above computes.
assert (base_ppl.n_tokens, base_ppl.n_windows) == (predicted, windows)
assert math.isclose(base_ppl.perplexity, by_hand, rel_tol=1e-4)

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
# 1. Find a word that the tokenizer splits into four or more tokens with
#    `lm.token_table(tokenizer, " Quennick")` (try a few rare names or long technical words).
#    Why is it split? Expect rare words and names to cost several tokens, common words one.
# 2. Run `lm.next_token_distribution(model, tokenizer, "The capital of Scotland is")` and again
#    with `temperature=0.5`. How confident is the model? Temperature 0.5 squares the
#    probabilities before renormalising (the loop in step 3 shows why), so it sharpens the
#    distribution but never changes which token is on top.
# 3. With the widget, find settings that make the continuation incoherent. Which knob matters
#    most? (Expect temperature: above about 1.5 the text falls apart unless top-k or top-p cut
#    the tail.)
# 4. Compute perplexity with a stride of half the block size:
#    `lm.perplexity(model, tokenizer, wikitext["validation"], max_length=settings.profile.block_size,
#    stride=settings.profile.block_size // 2, max_tokens=settings.profile.eval_max_tokens)`, and
#    the same call with `stride=settings.profile.block_size` (windows that do not overlap: step 5's
#    stride at the `smoke` and `laptop` profiles). Expect a lower perplexity with half the stride
#    (most tokens are now predicted with more context before them) and about twice the windows,
#    so about twice the time.
# 5. Perplexity depends on the tokenizer. Why can you not compare GPT-2's perplexity directly
#    with SmolLM2's?
#
# ## Questionnaire
# 1. What is a token, and why does `1 @,@ 200` cost more tokens than `1,200` would?
# 2. What does the model output for one position of its input, and how does a softmax turn that
#    into a probability distribution?
# 3. What does dividing the logits by a temperature below 1 do to the distribution?
# 4. Why does sampling from only the top 1 token give the same text as greedy decoding?
# 5. Define perplexity. Why does the sliding window count each token only once, and what would
#    go wrong if it counted the overlap twice?
# 6. Why is the shuffled-words comparison a better sanity check than the vocabulary size?
