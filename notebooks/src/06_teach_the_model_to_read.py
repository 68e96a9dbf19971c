# %% [markdown]
# # 06 · Teach the model to read: retrieval-augmented fine-tuning (RAFT)
#
# Notebook 04 gave a 135 M-parameter model the right passage — and it still often answered
# wrongly or invented a fact instead of saying "I don't know". Retrieval was not the main loss:
# the model could not *read*. This is where the two approaches meet: **fine-tune the model to use
# retrieval** (RAFT, Zhang et al. 2024). Each training example is a question, the chunks the real
# retriever returns for it, and a short target sentence. Most examples contain the chunk that
# answers (the *oracle*) among distractors; in some the oracle is removed, and the target is the
# abstention.
#
# **Learning goals**
# - Split the knowledge base by article, so a gain can only come from reading skill, not from
#   facts the model memorised.
# - Build RAFT examples from real retrieval, and compute the loss on the answer tokens only.
# - Train a reader (full fine-tuning and LoRA) and compare it with the base model, with the
#   knowledge-base fine-tune of notebook 05, and with itself without retrieval — on held-out
#   articles, with clean and realistic phrasing.

# %%
import pandas as pd
from IPython.display import display

import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import assets, claims, harness, injection, qa, raft, store, viz, widgets
from ragft_helpers.config import KNOWLEDGE_DIR, get_settings, set_seed
from ragft_helpers.results import save_results

settings = get_settings()
set_seed(settings.seed)
profile = settings.profile
base = assets.load_causal_lm(settings)
questions = qa.load_questions()
collection = store.open_collection(settings)
store.index_folder(KNOWLEDGE_DIR, collection, progress=False)  # nothing new if 03 or 04 ran

# %% [markdown]
# ## Step 1 — Split the knowledge base by article
# About a third of the articles are held out (`data/qa/raft_split.json`). RAFT trains only on
# questions about the other articles, retrieving from an index of those articles alone; every
# number below is measured on questions about the held-out ones.

# %%
held_out = raft.test_articles()
train_questions, test_questions = raft.split_questions(questions, held_out)
split_table = pd.DataFrame([{"side": side, "type": q.type} for side, group in
                            (("train", train_questions), ("test", test_questions)) for q in group])
display(split_table.value_counts().unstack(0))
print(f"{len(held_out)} held-out articles: {', '.join(sorted(held_out))}")
# Checkpoint: no question crosses the split.
assert not {a for q in train_questions for a, _ in q.sources} & held_out
assert all({a for a, _ in q.sources} <= held_out for q in test_questions)

# %% [markdown]
# ## Step 2 — One training example, written out
# The prompt is exactly what `rag.answer` sends at question time (the tokenizer's chat template,
# the numbered context, the instruction), built by the same function. The context is what the
# real retriever returns; when it missed the oracle, the oracle takes the place of the last
# distractor, at a random position — so the reader sees the oracle first about as often as it
# will at question time, and learns to look further when it is not. The target is the oracle's
# sentence that states the answer, opened by the oracle's number in the context ("[2]: ...") — or
# the abstention when the oracle was removed. With the oracle go all the other chunks that state
# the answer: the knowledge base repeats facts across articles (the Holm Lantern's article gives
# the date the Holm Link opened, the slipway's its sailing times), so a context without its
# oracle often still says the answer (`benchmarks/README.md`, "Abstention contexts without the
# answer", counts them). A reader taught "I don't know" beside the answer learns to ignore what
# it reads.
#
# > **Why the source number first?** Greedy decoding picks the single most likely next word. The
# > abstention is one constant sentence, while answers start with many different words, so after a
# > few training steps "I" (of "I don't know") easily becomes the most likely first word, and the
# > reader declines questions it could answer. When every answer starts with `[n]`, the first word
# > is a choice between *cite a source* and *abstain* — and the reader learns to say where its
# > answer comes from. The colon matters too: in the context block a number is followed by the
# > source's name (`[2] (fares.md > ...)`), and a reader trained on `[2] The ...` drifted into
# > copying that name instead of the sentence.

# %%
examples = raft.training_examples(settings, base.tokenizer, questions)
example = next(e for e in examples if e.oracle)
print("question:", example.question)
for label in example.sources:
    print("  context:", label, "   <- oracle" if label == example.oracle_label else "   (distractor)")
print("target:", example.target)
print(f"{len(examples)} examples, the oracle in the context of {sum(e.oracle for e in examples) / len(examples):.0%}")
# Checkpoint: the abstention share holds in what is trained on, and no held-out question,
# variant or answer appears in any training target.
assert abs(sum(not e.oracle for e in examples) / len(examples) - profile.raft_abstain_share) < 0.05
assert raft.leaks(examples, test_questions) == []

# %% [markdown]
# **Loss on the answer only.** The model should learn to *write the answer*, not to predict the
# prompt, so every prompt position gets the label -100, which the loss ignores. Written out by
# hand, then compared with `raft.encode`, which training uses:

# %%
tokenizer = base.tokenizer
prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
answer_ids = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
by_hand = {"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids}
encoded = raft.encode(example, tokenizer)
print(f"{len(encoded['input_ids'])} tokens; these {len(answer_ids)} carry loss:",
      repr(tokenizer.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"]) if label != -100])))
# Checkpoint: the package masks exactly as the hand-written version.
assert by_hand["input_ids"] == encoded["input_ids"] and by_hand["labels"] == encoded["labels"]

# %% [markdown]
# ## Step 3 — Train the readers
# Full fine-tuning and LoRA, with the profile's budget (`raft_max_steps` optimiser steps of
# `train_batch_size` examples; the `smoke` and `laptop` profiles give the full reader half of
# them, `raft_full_max_steps`: at `laptop` it scored no better with more, and CI stays short).
# Saved by settings, so a re-run reloads them. The chatbot and `ragft ask --reader raft` use the
# LoRA reader (`raft.CHAT_READER`): it is the one whose gain `benchmarks/bench_raft.py` checked
# over several seeds.

# %%
runs = {name: raft.ensure_reader(settings, name, questions, examples=examples) for name in raft.READERS}
pd.DataFrame([vars(r) for r in runs.values()]).set_index("name")

# %%
# Checkpoint: both readers learned their targets (the mean loss of their last eighth of steps is
# below that of their first eighth).
for run in runs.values():
    assert run.final_loss < run.first_loss, run

# %% [markdown]
# ## Step 4 — One harness, held-out articles
# Every system answers the same test-article questions: free-form (greedy, first sentence) and
# multiple choice. Each answerable and unanswerable question is asked twice: as written, and as
# a person would type it (one of its variants).

# %%
systems = [harness.System("base", base.model, base.tokenizer),
           harness.System("base + RAG", base.model, base.tokenizer, retrieval=True, collection=collection)]
sample = qa.sample(test_questions, profile.raft_eval_questions, seed=settings.seed)
results = harness.evaluate_phrasings(systems, sample, settings)
# The fine-tuned models are each loaded, scored and let go, so that no more than one of them is in
# memory beside the base model (the LoRA reader twice: with retrieval and without).
injection.ensure_variants(settings, ["kb-full"])
rag = {"retrieval": True, "collection": collection}
for name, load, options in [("RAFT full + RAG", lambda: raft.load_reader("raft-full", settings), rag),
                            ("RAFT LoRA + RAG", lambda: raft.load_reader(raft.CHAT_READER, settings), rag),
                            ("KB fine-tune + RAG", lambda: injection.load_variant("kb-full", settings), rag),
                            ("RAFT LoRA alone", lambda: raft.load_reader(raft.CHAT_READER, settings), {})]:
    results |= harness.evaluate_phrasings_loaded(name, load, sample, settings, **options)
names = ["base", "base + RAG", "RAFT full + RAG", "RAFT LoRA + RAG", "KB fine-tune + RAG", "RAFT LoRA alone"]
table = harness.metric_table(results, ["free", "false_abstention", "abstention", "mc"])
table.pivot(index=["system"], columns=["phrasing", "metric"], values="value").round(2)

# %% [markdown]
# How to read the table: `free` is accuracy on answerable questions; `abstention` is how often a
# system said "I don't know" to an *unanswerable* question (higher is better), and
# `false_abstention` how often it said so to an answerable one (lower is better).
#
# > **Reading is not yet judging.** Look at the RAFT readers' `abstention` next to their `free`
# > score. A reader that rarely abstains has learned "quote a sentence of a source" better than
# > "check that the source answers the question": only the share `raft_abstain_share` of its
# > training examples (step 2 printed it) taught the abstention, and all the others started with
# > `[`. Exercise 1 reads the reader's first-token probabilities to see that decision.
#
# Free-form accuracy with its 95% bootstrap interval: whiskers that do not overlap are a
# difference this sample can show.

# %%
free = table[table["metric"] == "free"].assign(metric=lambda t: t["phrasing"])
viz.plot_accuracy(free, names, ylabel="free-form accuracy (answerable)", chance=None);

# %%
pooled = {name: harness.pooled_summary(results, name)["free"] for name in names}
for name in pooled:
    print(f"{name:>18}: free-form accuracy {pooled[name]['value']:.2f} "
          f"[{pooled[name]['low']:.2f}, {pooled[name]['high']:.2f}] over both phrasings (n = {pooled[name]['n']})")
# Checkpoints: the trained reader beats the base reader on held-out articles, and without
# retrieval it knows no more held-out facts than the base model (it learned to read, not to
# remember).
assert pooled["RAFT LoRA + RAG"]["value"] > pooled["base + RAG"]["value"]
assert claims.compare_intervals(pooled["RAFT LoRA alone"], pooled["base"]) <= 0

# %% [markdown]
# The table, the pooled accuracies and what training cost go to `RAGFT_CACHE_DIR/results/`
# (`raft-<profile>.json`), with the settings and versions: the instructor's expected-results page
# (`docs/results-<profile>.md`) is generated from that file.

# %%
save_results({"table": table, "pooled": pooled, "readers": list(runs.values()),
              "questions": len(sample)}, settings, provenance=[base.provenance], stem="raft")

# %% [markdown]
# ## Step 5 — Three answers, before and after

# %%
rows = {name: results[(name, "canonical")].rows.set_index("id") for name in ("base + RAG", "RAFT LoRA + RAG")}
changed = rows["RAFT LoRA + RAG"]["correct"].fillna(False) & ~rows["base + RAG"]["correct"].fillna(False)
shown = list(rows["RAFT LoRA + RAG"][changed].index[:3]) or list(rows["RAFT LoRA + RAG"].index[:3])
with pd.option_context("display.max_colwidth", 120):
    display(pd.DataFrame({"question": rows["base + RAG"].loc[shown, "question"],
                          "expected": rows["base + RAG"].loc[shown, "expected"],
                          "base + RAG": rows["base + RAG"].loc[shown, "answer"],
                          "RAFT LoRA + RAG": rows["RAFT LoRA + RAG"].loc[shown, "answer"]}))

# %% [markdown]
# ## Step 6 — Chat with either reader
# The chatbot of notebook 04, with a **Reader** selector: ask the same question with the base
# model and with the RAFT reader reading the same retrieved chunks. (From a terminal:
# `ragft ask "..." --reader raft` uses the reader saved above and trains nothing.)

# %%
reader = raft.load_reader(raft.CHAT_READER, settings)  # the LoRA reader
widgets.chat_widget(model=base.model, tokenizer=base.tokenizer, collection=collection, settings=settings,
                    readers={raft.CHAT_READER: (reader.model, reader.tokenizer)})

# %% [markdown]
# ## Summary
# - Split by article, the gain cannot come from memorised facts: RAFT's reader without retrieval
#   knows no more about the held-out articles than the base model (step 4's last checkpoint).
# - With retrieval, the trained reader turns the same context into right answers more often than
#   the base model — the tables above are this run's numbers, on clean and realistic phrasing.
# - This is the literature's answer to "RAG or fine-tuning?": often *both* — fine-tune the model
#   to use what it retrieves.
#
# ## Exercises
# 1. **Cite or abstain: the first token decides.** For every test question (canonical wording),
#    build the prompt the reader sees (`rag.build_prompt(question, chunks, tokenizer)` with the
#    chunks `retrieval.retrieve` returns), run the LoRA reader once on it, and read the
#    probabilities of the first token of `"[1]: ..."` and of the abstention
#    (`rag.ABSTAIN_TEXT`). Compare them on answerable and unanswerable questions. What would have to
#    change for the reader to abstain more often? Expect `p(abstain)` to stay well below
#    `p(cite)` on the unanswerable questions too (the reference run abstains on none of them).
# 2. **More distractors.** Score `base + RAG` and `RAFT LoRA + RAG` again with one chunk and with
#    five (`harness.System(..., k=1)`, `k=5`) on the canonical test questions. Which reader loses
#    more when the context holds more distractors? Expect each answer to cite from exactly k
#    chunks, and accuracy differences of a question or two (inside the intervals) at this size.
# 3. **Which phrasing gains?** From `table`, compute each system's free-form accuracy on the
#    canonical questions and on the variants. Does RAFT help more on the clean questions or on
#    the way people type? Compare with the reference runs in `benchmarks/README.md` ("Retrieval-
#    augmented fine-tuning"): expect a gain of a few questions on one phrasing or both, each
#    inside its interval.
# 4. Find a held-out question RAFT LoRA + RAG gets wrong although the oracle chunk was retrieved
#    (the `sources` column lists the retrieved chunks). Is the answer in one sentence of the chunk,
#    or spread over two? Expect both kinds: a quoted wrong sentence (a reading error), or an
#    answer no single sentence states.
#
# ## Questionnaire
# 1. Why must the knowledge base be split by *article* rather than by question?
# 2. Why is the oracle removed from some training examples?
# 3. Which tokens carry loss in a RAFT example, and why not the prompt?
# 4. What does "RAFT LoRA alone" measure, and what result would show that the reader memorised facts?
# 5. Why is the prompt at training time built by the same function as at question time?
