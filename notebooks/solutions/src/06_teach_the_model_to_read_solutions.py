# %% [markdown]
# # 06 · Teach the model to read: retrieval-augmented fine-tuning (RAFT) — solutions
#
# Worked solutions to the exercises of [notebook 06](../06_teach_the_model_to_read.ipynb), each
# with a checkpoint that fails when the step it describes does not do what it says, and answers
# to its questionnaire. The setup is the notebook's own: the same settings, split, index and
# test-article questions, and the LoRA reader, which `raft.ensure_reader` reloads from the folder
# notebook 06 saved (nothing is trained here).

# %%
import pandas as pd
import torch
from IPython.display import display

import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import assets, harness, lm, qa, raft, rag, retrieval, store
from ragft_helpers.config import KNOWLEDGE_DIR, get_settings, set_seed
from ragft_helpers.retrieval_metrics import is_relevant

settings = get_settings()
set_seed(settings.seed)
profile = settings.profile
questions = qa.load_questions()
base = assets.load_causal_lm(settings, verbose=False)
collection = store.open_collection(settings)
store.index_folder(KNOWLEDGE_DIR, collection, progress=False)  # nothing new after notebook 06
raft.ensure_reader(settings, raft.CHAT_READER, questions)  # reloads what notebook 06 trained
reader = raft.load_reader(raft.CHAT_READER, settings)
_, test_questions = raft.split_questions(questions)
sample = qa.sample(test_questions, profile.raft_eval_questions, seed=settings.seed)
print(f"{len(sample)} test-article questions; reader {raft.CHAT_READER}; k = {profile.rag_k}")

# %% [markdown]
# ## Exercise 1 — Cite or abstain: the first token decides
# One forward pass over the prompt gives the distribution of the first answer token. Every
# answering target starts with `[`, the abstention with `I`: their probabilities are the reader's
# decision.

# %%
tokenizer = reader.tokenizer
cite_token = tokenizer("[1]: x", add_special_tokens=False)["input_ids"][0]
abstain_token = tokenizer(rag.ABSTAIN_TEXT, add_special_tokens=False)["input_ids"][0]
prompts, decisions = [], []
for question in sample:
    chunks = retrieval.retrieve(question.question, profile.rag_k, collection, settings=settings)
    prompt = rag.build_prompt(question.question, chunks, tokenizer)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=not rag.has_chat_template(tokenizer))
    with torch.no_grad():
        probabilities = reader.model(**ids).logits[0, -1].softmax(-1)
    prompts.append(prompt)
    decisions.append({"type": question.type, "answerable": question.answerable,
                      "p(cite)": probabilities[cite_token].item(),
                      "p(abstain)": probabilities[abstain_token].item(),
                      "first token": tokenizer.decode([int(probabilities.argmax())])})
decisions = pd.DataFrame(decisions)
display(decisions.groupby("answerable")[["p(cite)", "p(abstain)"]].mean().round(3))

# %%
# Checkpoint: the first token read off by hand is the one greedy generation chooses.
generated = lm.generate_greedy(reader.model, tokenizer, prompts, max_new_tokens=1,
                               add_special_tokens=not rag.has_chat_template(tokenizer))
agree = [g.text.strip() == first.strip() for g, first in zip(generated, decisions["first token"])]
print(f"first token agrees with greedy generation on {sum(agree)} of {len(agree)} prompts")
assert sum(agree) >= len(agree) - 1

# %% [markdown]
# When `p(abstain)` stays far below `p(cite)` on the unanswerable questions as well, the reader
# has learned "quote a source" more than "check whether a source answers". What would change
# that: more abstention examples (a larger `raft_abstain_share`), harder ones (contexts that look
# relevant but do not answer), more steps, or a rule at question time that abstains when
# `p(abstain)` is above a threshold chosen on the *train* articles' questions — never on the
# test ones. Two of these were measured at the laptop profile, harder abstention examples and a
# similarity threshold chosen on the train articles; neither reached the abstention target
# (`benchmarks/README.md`, "Why the readers do not abstain", has the numbers).

# %% [markdown]
# ## Exercise 2 — More distractors

# %%
by_k = []
for k in (1, profile.rag_k, 5):
    for name, resolved in (("base + RAG", base), ("RAFT LoRA + RAG", reader)):
        system = harness.System(name, resolved.model, resolved.tokenizer, retrieval=True,
                                collection=collection, k=k)
        result = harness.evaluate_system(system, sample, settings, multiple_choice_too=False)
        free = result.summary()["free"]
        by_k.append({"system": name, "k": k, "free-form": free["value"], "n": free["n"],
                     "most sources shown": int(result.rows["sources"].map(len).max()),
                     "rows": result.rows})
pd.DataFrame(by_k).drop(columns="rows").pivot(index="k", columns="system", values="free-form").round(2)

# %%
# Checkpoint: each run read the number of chunks it was given.
assert all(row["most sources shown"] == row["k"] for row in by_k), pd.DataFrame(by_k)[["system", "k", "most sources shown"]]

# %% [markdown]
# ## Exercise 3 — Which phrasing gains?
# The notebook's `table` holds each system's free-form accuracy per phrasing; here the same
# metric for the two systems, from a fresh run at the profile's k, by phrasing.

# %%
systems = [harness.System("base + RAG", base.model, base.tokenizer, retrieval=True, collection=collection),
           harness.System("RAFT LoRA + RAG", reader.model, reader.tokenizer, retrieval=True,
                          collection=collection)]
results = harness.evaluate_phrasings(systems, sample, settings)
table = harness.metric_table(results, ["free"])
by_phrasing = table.pivot(index="phrasing", columns="system", values="value")
by_phrasing["gain"] = by_phrasing["RAFT LoRA + RAG"] - by_phrasing["base + RAG"]
by_phrasing.round(2)

# %%
# Checkpoint: the pooled accuracy the notebook asserts on is the n-weighted mean of the phrasings.
for system in by_phrasing.columns.drop("gain"):
    rows = table[table["system"] == system]
    pooled = harness.pooled_summary(results, system)["free"]
    assert abs(pooled["value"] - (rows["value"] * rows["n"]).sum() / rows["n"].sum()) < 1e-9

# %% [markdown]
# ## Exercise 4 — A wrong answer with the oracle in the context

# %%
rows = next(row["rows"] for row in by_k if row["system"] == "RAFT LoRA + RAG" and row["k"] == profile.rag_k)
found = None
for question in sample:
    row = rows[rows["id"] == question.id].iloc[0]
    if not question.answerable or row["correct"]:
        continue
    chunks = retrieval.retrieve(question.question, profile.rag_k, collection, settings=settings)
    oracle = [c for c in chunks if is_relevant(c.metadata, question)]
    if oracle:
        found = (question, row, oracle)
        break
if found is None:
    print("RAFT LoRA + RAG answered every question whose oracle it was shown")
else:
    question, row, oracle = found
    sentence = raft.answer_sentence(question, oracle)
    print(f"question: {question.question}\nexpected: {question.answer}\nanswer:   {row['answer']}")
    print(f"oracle:   {oracle[0].label}")
    print("one sentence holds the answer:" if sentence else "no one sentence holds the answer:",
          sentence or oracle[0].body[:400])
    # Checkpoint: the example is what the exercise asks for.
    assert question.answerable and not row["correct"] and oracle

# %% [markdown]
# When one sentence holds the answer, the reader quoted the wrong sentence (often the first of
# source [1]): a reading error. When no single sentence does (a multi-hop question, or a value in
# a table row), the RAFT target for such questions was a paraphrase, and the reader has to
# combine two places — which a 135M model trained for a few minutes rarely does.

# %% [markdown]
# ## Questionnaire answers
# 1. **By article, not by question:** questions about the same article share its facts. Split by
#    question, a test question's answer could be the target of a training question about the
#    same article, and a gain could come from memorising it. Split by article, the test facts are
#    never in a training target (`raft.leaks` checks it).
# 2. **The oracle removed:** at question time retrieval sometimes misses. Examples without the
#    oracle, whose target is the abstention, teach the reader to decline when the context does
#    not answer, instead of quoting whatever is there.
# 3. **Which tokens carry loss:** only the target's (the answer sentence or the abstention, and
#    the end-of-turn token); the prompt positions are labelled -100. The prompt is given at
#    question time; learning to predict it would spend the budget on copying retrieved text and
#    the question rather than on answering.
# 4. **RAFT LoRA alone** asks the reader the test questions without retrieval. It measures what
#    the reader *knows* about the held-out articles. An accuracy above the base model's (with
#    intervals that do not overlap) would mean it memorised facts, i.e. a leak.
# 5. **The same prompt function:** a model fine-tuned on one prompt layout reads that layout. If
#    training and question time built prompts differently (another template, other numbering),
#    the reader would meet at question time an input it was never trained on.
