# %% [markdown]
# # 04 · A RAG chatbot that cites its sources — solutions
#
# Worked solutions to the exercises of [notebook 04](../04_rag_chatbot.ipynb), each with a
# checkpoint that fails when the effect the exercise describes does not hold, and answers to its
# questionnaire. The setup is the notebook's own: the same model, the same index (filled by
# notebooks 03 and 04, so nothing is embedded again) and the same questions.

# %%
import pandas as pd

import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import assets, chat, config, harness, lm, qa, rag, retrieval, scoring, store
from ragft_helpers.config import get_settings, set_seed

settings = get_settings()
set_seed(settings.seed)
resolved = assets.load_causal_lm(settings)
model, tokenizer = resolved.model, resolved.tokenizer
collection = store.open_collection(settings)
report = store.index_folder(config.KNOWLEDGE_DIR, collection, progress=False)
print(f"index: {collection.count()} chunks ({report.embedded} embedded now)")
sample = qa.load_questions(limit=settings.profile.n_questions, seed=settings.seed)
answerable = [q for q in sample if q.type == "single-hop"][:settings.profile.chat_eval_single_hop]


def with_retrieval(text):
    return rag.answer(text, model=model, tokenizer=tokenizer, collection=collection,
                      settings=settings).text


rag_scores = harness.score_answers(answerable, with_retrieval)
rag_scores[["question", "expected", "answer", "correct"]]

# %% [markdown]
# ## Exercise 1 — Right chunk, wrong answer?
# For every wrong row (with retrieval), the sources the model saw are searched for the expected
# answer or an accepted alias — the same rule that scores the answers.

# %%
by_text = {q.question: q for q in answerable}
wrong = rag_scores[~rag_scores["correct"]]
diagnoses = []
for text in wrong["question"]:
    question = by_text[text]
    reply = rag.answer(text, model=model, tokenizer=tokenizer, collection=collection, settings=settings)
    in_sources = [n for n, source in enumerate(reply.sources, start=1)
                  if scoring.contains_answer(source.body, question)]
    diagnoses.append({"question": text, "expected": question.answer, "answer": reply.text,
                      "sources": [s.label for s in reply.sources], "answer in source #": in_sources,
                      "fix in": "generation (reader)" if in_sources else "retrieval (k, chunks, method)",
                      "same answer as scored": reply.text == wrong.set_index("question").loc[text, "answer"]})
diagnosis = pd.DataFrame(diagnoses)
diagnosis

# %%
print(diagnosis["fix in"].value_counts().to_dict())
# Checkpoints: there are wrong answers to diagnose; asking again reproduces each one (greedy
# decoding), and each gets a diagnosis from its own sources.
assert len(diagnosis) >= 1, "every answer was right: nothing to diagnose on this sample"
assert diagnosis["same answer as scored"].all()
assert all((d["fix in"] == "generation (reader)") == bool(d["answer in source #"]) for d in diagnoses)

# %% [markdown]
# Where the expected answer is in a source, retrieval did its job and the 135M reader failed to
# copy the fact out — a larger or better reader (or a reader trained to read its context,
# notebook 08's RAFT) is the fix. Where it is in none of the sources, no reader could have
# answered: raise k, change the chunk size or the retrieval method.

# %% [markdown]
# ## Exercise 2 — k = 1 against k = 8
# The widget's slider passes k to `chat.chat_turn`, which passes it to `rag.answer`; here the
# same call runs for k = 1 and k = 8 on the same questions. The prompt length is counted in
# tokens; *prefill* is the time the model spends reading the prompt before the first new token.

# %%
asked = answerable[:4]
k_rows = []
for k in (1, 8):
    for question in asked:
        reply = rag.answer(question.question, model=model, tokenizer=tokenizer, collection=collection,
                           settings=settings, k=k)
        k_rows.append({"k": k, "question": question.question, "chunks": len(reply.sources),
                       "prompt tokens": len(tokenizer(reply.prompt)["input_ids"]),
                       "prefill ms": reply.prefill_ms, "generation ms": reply.generation_ms,
                       "answer": reply.text, "correct": scoring.contains_answer(reply.text, question),
                       "fact only beyond chunk 1": not scoring.contains_answer(reply.sources[0].body, question)
                       and any(scoring.contains_answer(s.body, question) for s in reply.sources[1:])})
by_k = pd.DataFrame(k_rows)
by_k.groupby("k")[["chunks", "prompt tokens", "prefill ms", "generation ms", "correct"]].mean().round(1)

# %%
means = by_k.groupby("k")[["prompt tokens", "prefill ms"]].median()
print(f"median prompt: {means.loc[1, 'prompt tokens']:.0f} tokens at k=1, "
      f"{means.loc[8, 'prompt tokens']:.0f} at k=8; median prefill "
      f"{means.loc[1, 'prefill ms']:.0f} ms → {means.loc[8, 'prefill ms']:.0f} ms")
print("questions whose fact sits only in a chunk after the first (k=8):",
      int(by_k[by_k["k"] == 8]["fact only beyond chunk 1"].sum()))
# Checkpoints: k=8 puts 8 chunks in a prompt several times longer (reading it takes longer, as
# the prefill times show; times depend on what else the machine is doing, so the checkpoint is
# on the prompt).
assert (by_k[by_k["k"] == 8]["chunks"] == 8).all() and (by_k[by_k["k"] == 1]["chunks"] == 1).all()
assert means.loc[8, "prompt tokens"] > 3 * means.loc[1, "prompt tokens"]

# %% [markdown]
# With k = 1 every question whose fact is not in the single best chunk is lost before the model
# even reads anything (the count above is how many of these questions have it only further
# down); with k = 8 the fact is more often there, but the prompt is several times longer, and a
# small reader also gets more text to be distracted by.

# %% [markdown]
# ## Exercise 3 — A higher threshold

# %%
at_half = [rag.answer(q.question, model=model, tokenizer=tokenizer, collection=collection,
                      settings=settings, threshold=0.5) for q in answerable]
abstaining = sum(reply.abstained for reply in at_half)
best_scores = pd.Series([rag.best_score(reply.sources) for reply in at_half], name="best chunk score")
print(f"{abstaining} of {len(answerable)} single-hop questions abstain at threshold 0.5 "
      f"(default {rag.DEFAULT_THRESHOLD}); best scores: {best_scores.round(2).tolist()}")
best_scores.describe().round(3).to_frame().T

# %%
# Checkpoints: exactly the questions whose best chunk scores below 0.5 abstain, and some real
# questions do — while none of them scores below the default threshold.
assert all(reply.abstained == (rag.best_score(reply.sources) < 0.5) for reply in at_half)
assert abstaining >= 1
assert (best_scores >= rag.DEFAULT_THRESHOLD).all()

# %% [markdown]
# Real questions' best chunks score well above the off-topic ones of step 6, but not all above
# 0.5: a threshold of 0.5 would turn away answerable questions whose wording differs from the
# article's. The default sits lower, between where off-topic questions fall and where real ones
# start.

# %% [markdown]
# ## Exercise 4 — A follow-up that needs the history

# %%
state = chat.ChatState()
state, first_view = chat.chat_turn(state, "How much does the Tern Card cost?", model=model,
                                   tokenizer=tokenizer, collection=collection, settings=settings)
follow_up = "And how much is a replacement card?"
state, view = chat.chat_turn(state, follow_up, model=model, tokenizer=tokenizer,
                             collection=collection, settings=settings)
print("answer:", view.answer)
pd.DataFrame(view.sources)

# %%
# The prompt of that turn, rebuilt with the same history, and what retrieval finds for the
# message on its own.
with_history = rag.answer(follow_up, model=model, tokenizer=tokenizer, collection=collection,
                          settings=settings, history=state.history[:1])
alone = retrieval.retrieve(follow_up, settings.profile.rag_k, collection, settings=settings)
# Checkpoints: both turns are recorded; the prompt holds the previous turn; the sources are
# exactly what the new message retrieves without any history.
assert len(state.history) == 2 and with_history.text == view.answer
assert "How much does the Tern Card cost?" in with_history.prompt
assert view.sources == chat.source_rows(alone)

# %% [markdown]
# The model sees the Tern Card turn, but retrieval searched for "And how much is a replacement
# card?" alone — "card" without "Tern" may bring the right section or some other card or ticket.
# A real bot rewrites a follow-up into a standalone question (or appends the previous question)
# before retrieving.

# %% [markdown]
# ## Exercise 5 — The question before the context
# Step 3's `retrieve`, `combine` and `generate`, with `combine` changed to put the question first.

# %%
import re

import torch

question = "What is the passenger capacity of the vessel on the Orvanay Crossing?"
reply = rag.answer(question, model=model, tokenizer=tokenizer, collection=collection, settings=settings)


def retrieve(question):
    return retrieval.retrieve(question, settings.profile.rag_k, collection, settings=settings)


def combine_question_first(question, chunks):
    sources = "\n\n".join(f"[{n}] ({chunk.label})\n{chunk.body.strip()}"
                          for n, chunk in enumerate(chunks, start=1))
    request = f"Question: {question}\n\n<context>\n{sources}\n</context>"
    if tokenizer.chat_template:  # an instruction-tuned model: its own chat format
        messages = [{"role": "system", "content": rag.SYSTEM_WITH_CONTEXT},
                    {"role": "user", "content": request}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{rag.SYSTEM_WITH_CONTEXT}\n\n{request}\nAnswer:"  # a plain completion prompt


def generate(prompt):
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=not tokenizer.chat_template)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=settings.profile.max_new_tokens,
                                do_sample=False, pad_token_id=lm.pad_token_id(tokenizer))
    text = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    first = re.match(r"\s*(\S.*?(?:[.!?][\"')\]]*(?=\s)|(?=\n)))", text, re.DOTALL)
    return (first.group(1) if first else text).strip()  # the answer's first sentence


question_first = combine_question_first(question, retrieve(question))
answer_question_first = generate(question_first)
print("context first: ", reply.text)
print("question first:", answer_question_first)

# %%
# Checkpoints: the notebook's checkpoint `by_hand_prompt == reply.prompt` fails now — the same
# pieces in another order; the answer is compared below.
assert question_first != reply.prompt
assert question_first.index("Question:") < question_first.index("<context>")
assert sorted(question_first) == sorted(reply.prompt)  # the same characters, reordered
print("the answer changed" if answer_question_first != reply.text else "the answer is the same")

# %% [markdown]
# Whether the answer changes depends on the question; the printout gives this run's result. A
# small model tends to attend most to what is nearest the end of the prompt: with the context
# first, the question is the last thing it reads before answering, which is why the package puts
# it there.

# %% [markdown]
# ## Questionnaire answers
# 1. **The three steps** are *retrieve* (find the chunks most relevant to the question),
#    *combine* (put them with the question into one prompt) and *generate* (the model writes the
#    answer). This bot runs them in the order retrieve, combine, generate: it combines *before*
#    it generates, by pasting the chunks into the prompt. (RAG-Sequence generates from each
#    passage and combines last, by marginalising.)
# 2. **`<context>` tags, numbers, instruction.** The tags mark where the retrieved text begins
#    and ends, so the model — and the system prompt, which says the sources are data, not
#    instructions — can tell reference text from the request; markup that could end the block
#    early is removed from the chunks. The numbers let the answer cite `[1]`, `[2]` and let the
#    reader check it against the sources table. The instruction to answer only from the context
#    (and to say "I don't know" otherwise) discourages the model from filling gaps with invented
#    facts.
# 3. **Threshold vs instruction.** The threshold catches questions the knowledge base has nothing
#    *near*: off-topic questions whose best chunk scores low are refused without calling the
#    model at all — cheap and certain. It cannot catch in-domain questions the knowledge base
#    does not answer: their best chunks mention the same ships and islands and score as high as
#    real ones. Only the instruction can stop those, by the model noticing the context lacks the
#    answer; conversely the instruction is unreliable (a small model prefers a fluent guess),
#    which is why the threshold is there for the easy cases.
# 4. **`facebook/rag-token-nq`** needs the hub to download its weights, a 64.6 GB precomputed
#    index of 21 million Wikipedia passages, faiss to search it, and a dataset loading script that
#    current `datasets` refuses to run; the bot here needs an embedding model, a Chroma folder of
#    a few MB and any chat model. *Marginalising over passages*: the answer's probability is the
#    sum over the retrieved passages z of p(z | question) × p(answer | question, z) — every
#    passage contributes, weighted by how well it matched — rather than committing to one passage
#    or concatenating them.
# 5. **RAG-Token vs RAG-Sequence.** RAG-Sequence marginalises once per whole answer,
#    p(y|x) = Σ_z p(z|x) Π_i p(y_i|x,z,y_<i): each passage generates the full answer. RAG-Token
#    marginalises at every token, p(y|x) = Π_i Σ_z p(z|x) p(y_i|x,z,y_<i), so different tokens
#    can lean on different passages. Both classes have the same weights and module names, so
#    `from_pretrained` loads either checkpoint into either class without a missing or unexpected
#    weight — and without a warning, although the config names the other architecture — but the
#    forward pass computes a different probability, so losses and generations change (step 4
#    measured a different loss for the same answer).
# 6. **Where the extra time goes.** A little into retrieval itself (embedding the question,
#    searching Chroma and BM25: tens of milliseconds), most into *prefill*: the prompt now holds
#    several chunks, several hundred tokens more, and the model must process every prompt token
#    before it writes the first new one. Decoding each new token also costs slightly more, since
#    attention looks back over the longer prompt.
