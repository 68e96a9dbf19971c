# %% [markdown]
# # 07 · Where fine-tuning wins: a task, not facts
#
# Notebook 05 asked fine-tuning to do what it is worst at: store new *facts*, where retrieval is
# far ahead (the showdown, notebook 08, measures by how much). But fine-tuning is meant for something else — "laser focus on a narrow use case", "text
# classification tasks like sentiment analysis or spam detection". This notebook puts both
# approaches on one such task: sorting customer messages to Quennick Sound Ferries into ten
# intents (booking, refund, timetable, …). Retrieval gets its best shot — the most similar
# labelled messages as examples in the prompt, or a plain vote of those neighbours — and
# fine-tuning trains a small classifier. Then we vary the number of labelled examples and watch
# the verdict flip, and finally add an eleventh intent to see what each approach costs to adapt.
#
# **Learning goals**
# - Score a classification task with a language model: zero-shot and retrieval-based few-shot,
#   by the likelihood of each intent name.
# - Build a kNN classifier from a Chroma index of labelled messages — no language model at all.
# - Fine-tune classifiers with `Trainer`: the small MiniLM encoder with a head, and the causal LM
#   with a head (all weights, or LoRA).
# - Compare with macro-F1, bootstrap intervals, a confusion matrix, latency and training cost.
# - Find, by measurement, how many labelled examples fine-tuning needs to overtake retrieval.
# - See why retrieval adapts to a new intent in seconds while a classifier must be retrained.
# - Watch a classifier over-fit when trained too long, and measure early stopping as the fix.

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import assets, cli, results, tasks, viz
from ragft_helpers.config import get_settings, set_seed
from ragft_helpers.machine import PeakRSS

settings = get_settings()
set_seed(settings.seed)
profile = settings.profile
labels = tasks.ORIGINAL_LABELS
tickets = tasks.load_tickets()
train = tasks.training_set(tickets, settings)
test = tasks.test_set(tickets, settings)
print(f"profile {profile.name}: {len(train)} labelled training messages "
      f"({len(train) // len(labels)} per intent), {len(test)} test messages "
      f"({len(test) // len(labels)} per intent)")

# %% [markdown]
# ## Step 1 — The task and its data
# `data/tickets/` holds 1,060 hand-written messages, one intent each, in train / validation /
# test splits (`data/README.md` documents them, with the precedence rules for messages that touch
# two intents). The eleventh intent, `group_travel`, is held back for step 7. All reported numbers
# come from the **test** split; the validation split is there for tuning, and nothing here is
# tuned on test.

# %%
counts = pd.crosstab(pd.Series([t.label for t in tickets], name="intent"),
                     pd.Series([t.split for t in tickets], name="split"))
counts

# %%
pd.DataFrame([{"intent": t.label, "message": t.text} for t in train if t.shot < 1])

# %% [markdown]
# ## Step 2 — Index the labelled messages
# Retrieval for a task means: find the labelled messages most like the new one. Each training
# message goes into its own Chroma collection (`tickets`) with its intent and its position among
# its intent's messages as metadata, so a query can ask for "the nearest among the first 8 of each
# intent" (step 6 needs that). Indexing adds only messages that are not there yet, so a re-run
# adds nothing; the held-back intent is removed first, so step 6 starts from the same state.

# %%
collection = tasks.open_tickets(settings)
removed = tasks.remove_label(collection, tasks.NEW_LABEL)
added, index_seconds = tasks.index_tickets(collection, train)
print(f"index '{collection.name}': {collection.count()} messages ({added} added now in "
      f"{index_seconds:.1f} s; {removed} {tasks.NEW_LABEL} messages removed)")

# %%
# Checkpoint: every training message is indexed, the held-back intent is not.
indexed = set(collection.get(ids=[t.id for t in train], include=[])["ids"])
assert indexed == {t.id for t in train}
assert collection.get(where={"label": tasks.NEW_LABEL}, include=[])["ids"] == []

# %% [markdown]
# ## Step 3 — Fine-tune classifiers
# A classifier puts a small new layer (the *head*: one score per intent) on top of a pretrained
# model and trains both on the labelled messages with `Trainer` — cross-entropy on the intent, not
# next-token prediction. Three of them:
# - **MiniLM**: the 22M-parameter sentence encoder that also embeds the index, every weight trained;
# - **LM full**: the causal LM (`AutoModelForSequenceClassification` scores the last token), every weight;
# - **LM LoRA**: the same with frozen weights and LoRA adapters (`peft.get_peft_model`).
#
# Each is saved under `RAGFT_CACHE_DIR/finetuned/<profile>/task-<kind>-<key>`, keyed by its
# settings and training messages: a re-run reloads it instead of training. The causal-LM
# classifiers are much more expensive per step, so the profile gives them fewer epochs
# (`task_lm_epochs`) than MiniLM (`task_epochs`).

# %%
runs = {kind: tasks.ensure_classifier(kind, train, settings) for kind in tasks.CLASSIFIERS}
pd.DataFrame([{"classifier": kind, "messages": r.training_messages, "steps": r.steps,
               "trainable params": r.trainable_params, "trainable %": 100 * r.trainable_params / r.total_params,
               "train s": round(r.train_seconds, 1), "peak RSS MB": round(r.peak_memory_mb),
               "first loss": round(r.first_loss, 3), "final loss": round(r.final_loss, 3)}
              for kind, r in runs.items()]).set_index("classifier")

# %%
# Checkpoint: training lowered the MiniLM classifier's loss.
assert runs["minilm"].final_loss < runs["minilm"].first_loss

# %% [markdown]
# The causal-LM classifiers' first and final losses are single-step losses of a short run, so they
# are noisy; step 5 measures what they learned.

# %% [markdown]
# ## Step 4 — Three ways to classify a message by retrieval and prompting
# **Zero-shot**: the instruction lists every intent with a one-line definition; the model's answer
# is the intent *name* with the highest mean log-probability per token (the multiple-choice rule
# of `scoring.choose_option`, which the showdown uses too). **Few-shot**: the same, with the `task_shots` most similar training messages
# and their intents as earlier turns of the chat — retrieval-augmented generation, for a task.
# **kNN**: no language model: the `task_knn_k` nearest messages vote, weighted by similarity, and
# each intent's votes are divided by how many of its messages are indexed (a *balanced* vote: an
# intent with few examples is not outvoted by the number of another's; step 7 needs that).
# Here is the few-shot prompt for one test message.

# %%
lm = assets.load_causal_lm(settings)
zero_shot = tasks.ZeroShot(lm.model, lm.tokenizer, max_tokens=profile.task_max_length)
few_shot = tasks.FewShot(lm.model, lm.tokenizer, collection=collection, k=profile.task_shots,
                         max_tokens=profile.task_max_length)
knn = tasks.KNN(collection, k=profile.task_knn_k)
example = test[0]
print(tasks.build_task_prompt(example.text, lm.tokenizer, labels, few_shot.examples(example.text)))

# %%
prediction = few_shot.predict(example.text)
print(f"true intent: {example.label}; few-shot says {prediction.label}, kNN says "
      f"{knn.predict(example.text).label}")
pd.Series(prediction.scores, name="mean log-prob per token").sort_values(ascending=False).to_frame()

# %% [markdown]
# ## Step 5 — Every system on the same test messages
# Each system classifies each test message on its own, so the latency is per message. Accuracy
# and **macro-F1** (the F1 of each intent, averaged, so every intent counts the same) come with
# 95% bootstrap intervals over the test messages.

# %%
with PeakRSS() as memory:
    scored = {system.name: tasks.evaluate(system, test, settings=settings)
              for system in (zero_shot, few_shot, knn)}
    # Each fine-tuned classifier is loaded, scored and let go: the causal-LM ones are copies of the
    # 135M model, and holding all three at once would cost about 1 GB more.
    fine_tuned = []
    for kind in tasks.CLASSIFIERS:
        classifier = tasks.load_classifier(kind, train, settings)
        scored[classifier.name] = tasks.evaluate(classifier, test, settings=settings)
        fine_tuned.append(classifier.name)
        del classifier
table = tasks.results_table(list(scored.values()), labels)
table["train s"] = [0.0, 0.0, 0.0] + [runs[kind].train_seconds for kind in tasks.CLASSIFIERS]
table["index s"] = [0.0, index_seconds, index_seconds, 0.0, 0.0, 0.0]
table.round(3)

# %%
best = table.loc[fine_tuned, "macro_f1"].idxmax()
viz.plot_task_scores(table)
plt.show()
print(f"best fine-tuned classifier: {best}, macro-F1 {table.loc[best, 'macro_f1']:.3f} "
      f"[{table.loc[best, 'macro_f1_low']:.3f}, {table.loc[best, 'macro_f1_high']:.3f}] at "
      f"{table.loc[best, 'ms_per_message']:.0f} ms per message; few-shot "
      f"{table.loc['few-shot', 'macro_f1']:.3f} at {table.loc['few-shot', 'ms_per_message']:.0f} ms; "
      f"zero-shot {table.loc['zero-shot', 'macro_f1']:.3f}; peak memory {memory.peak_mb / 1024:.2f} GB")

# %%
# Checkpoint: the fine-tuned classifier beats zero-shot — its whole interval lies above.
assert tasks.separated(table, best, "zero-shot")
assert table.loc[best, "ms_per_message"] < table.loc["few-shot", "ms_per_message"]

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
viz.plot_confusion_matrix(tasks.confusion_matrix(scored["few-shot"], labels), axes[0], "few-shot")
viz.plot_confusion_matrix(tasks.confusion_matrix(scored[best], labels), axes[1], best)
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the off-diagonal cells: they are the precedence rules at work. `refund` against
# `disruption` and `booking`, `complaint` against `refund` — messages that mention a cancelled
# sailing, but ask for different things. Retrieval finds a *similar* message; similar wording
# does not always mean the same intent. A trained classifier learns which words decide.

# %% [markdown]
# ## Step 6 — The crossover: how many labelled examples does fine-tuning need?
# With two examples per intent a classifier has almost nothing to learn from, while retrieval can
# already show the model the two nearest. The learning curve repeats few-shot, kNN and the MiniLM
# classifier with the first 2, 8, … labelled messages of each intent (the profile's
# `task_curve_sizes`), on `task_curve_test_per_label` test messages per intent. Each classifier
# size is trained once and saved. The largest size is step 5's systems on some of step 5's
# messages, so their predictions are reused, not made again (`tasks.evaluate` keeps every
# message's prediction per system).

# %%
curve = tasks.learning_curve(tickets, lm, collection, settings)
cross = tasks.crossover(curve)
viz.plot_learning_curve(curve, cross)
plt.show()
curve.pivot(index="per_label", columns="system", values="macro_f1").round(3)

# %%
if cross["status"] == "crossed":
    verdict = (f"fine-tuning overtakes retrieval between {cross['below']} and {cross['per_label']} "
               f"labelled examples per intent, and stays ahead (by {cross['margin']:.3f} macro-F1 "
               "at the largest size)")
elif cross["status"] == "always ahead":
    verdict = f"fine-tuning is ahead at every size measured, from {cross['per_label']} per intent"
elif cross["status"] == "mixed":
    verdict = (f"the lead changes hands; fine-tuning stays ahead from {cross['per_label']} per intent")
else:
    verdict = (f"within this range fine-tuning never overtakes retrieval (behind by "
               f"{-cross['margin']:.3f} at the largest size)")
print(verdict)

# %%
# Checkpoint: the curve has every size and system, and more data helps the classifier.
sizes = curve.pivot(index="per_label", columns="system", values="macro_f1")
assert set(sizes.columns) == {"few-shot", "kNN", "fine-tuned"} and sizes.notna().all().all()
assert sizes["fine-tuned"].iloc[-1] > sizes["fine-tuned"].iloc[0]

# %% [markdown]
# ## Step 7 — A new intent appears
# The Group Desk opens: messages about groups of ten or more now get their own intent,
# `group_travel`, and we have `task_new_examples` labelled examples. Retrieval adapts by
# **indexing** them; the classifier has exactly ten outputs and cannot say `group_travel` at all
# until it is **retrained** with an eleventh. We score both on the `group_travel` test messages
# plus `task_curve_test_per_label` test messages of each other intent.

# %%
new_labels = (*labels, tasks.NEW_LABEL)
new_examples = tasks.select(tickets, "train", [tasks.NEW_LABEL], profile.task_new_examples)
new_test = tasks.new_intent_set(tickets, settings)
print(f"{len(new_examples)} labelled {tasks.NEW_LABEL} examples; {len(new_test)} test messages, "
      f"{sum(t.label == tasks.NEW_LABEL for t in new_test)} of them {tasks.NEW_LABEL}")
print("\n".join(f"- {t.text}" for t in new_examples[:3]))

# %%
knn_new = tasks.KNN(collection, labels=new_labels, k=profile.task_knn_k)
few_shot_new = tasks.FewShot(lm.model, lm.tokenizer, labels=new_labels, collection=collection,
                             k=profile.task_shots, max_tokens=profile.task_max_length)
before = tasks.evaluate(knn_new, new_test, progress=False, settings=settings)  # no examples yet
added_new, adapt_seconds = tasks.index_tickets(collection, new_examples)
print(f"retrieval adapted: {added_new} examples indexed in {adapt_seconds:.2f} s")
after = {"kNN": tasks.evaluate(knn_new, new_test, settings=settings),
         "few-shot": tasks.evaluate(few_shot_new, new_test, settings=settings),
         "fine-tuned (10 intents)": tasks.evaluate(tasks.load_classifier("minilm", train, settings), new_test,
                                                  settings=settings)}

# %%
retrain = tasks.ensure_classifier("minilm", train + new_examples, settings, labels=new_labels)
retrained = tasks.load_classifier("minilm", train + new_examples, settings, labels=new_labels,
                                  name="fine-tuned, retrained")
after["fine-tuned, retrained (11 intents)"] = tasks.evaluate(retrained, new_test, settings=settings)
new_intent = pd.DataFrame([{
    "system": name, f"{tasks.NEW_LABEL} recall": tasks.recall(rows, tasks.NEW_LABEL),
    "macro-F1, 11 intents": tasks.macro_f1(rows["label"], rows["predicted"], new_labels),
    "accuracy on the other intents": rows[rows["label"] != tasks.NEW_LABEL]["correct"].mean(),
    "seconds to adapt": adapt_seconds if name in ("kNN", "few-shot") else (
        retrain.train_seconds if "retrained" in name else float("nan"))}
    for name, rows in after.items()]).set_index("system")
new_intent.round(3)

# %%
recall_knn = new_intent.loc["kNN", f"{tasks.NEW_LABEL} recall"]
recall_old = new_intent.loc["fine-tuned (10 intents)", f"{tasks.NEW_LABEL} recall"]
print(f"before indexing, kNN recall on {tasks.NEW_LABEL}: {tasks.recall(before, tasks.NEW_LABEL):.2f}; "
      f"after indexing {len(new_examples)} examples ({adapt_seconds:.2f} s): {recall_knn:.2f}; "
      f"few-shot {new_intent.loc['few-shot', f'{tasks.NEW_LABEL} recall']:.2f}; the old classifier "
      f"{recall_old:.2f}; retrained ({retrain.train_seconds:.0f} s of training when it was trained): "
      f"{new_intent.loc['fine-tuned, retrained (11 intents)', f'{tasks.NEW_LABEL} recall']:.2f}")

# %%
_, knn_low, knn_high = tasks.recall_interval(after["kNN"], tasks.NEW_LABEL)
print(f"kNN recall on {tasks.NEW_LABEL}: {recall_knn:.2f}, 95% interval [{knn_low:.2f}, {knn_high:.2f}]; "
      f"the workbook's target of 0.6 is {'met' if recall_knn >= 0.6 else 'not met'} at this profile")

# %%
# Checkpoint: kNN handles the new intent once its examples are indexed (recall interval clear of
# zero); before indexing it could not, and the old classifier cannot at all.
assert tasks.recall(before, tasks.NEW_LABEL) == 0
assert knn_low > 0
assert recall_old == 0

# %% [markdown]
# ## Step 8 — Trained too long: over-fitting, and the fix
# The source article warns that fine-tuning "may overfit if trained excessively" and names the
# fix: stop early, or regularise. Here is that pitfall on this task. The MiniLM classifier trains
# on only `task_overtrain_per_label` messages per intent for `task_overtrain_epochs` epochs at a
# constant learning rate — far too long for so little data — and after every epoch the loss is
# measured on the training messages and on the **validation** split. The training loss keeps
# falling; the validation loss stops falling and climbs as the model grows sure of its mistakes.
# **Early stopping** keeps a copy of the weights of the epoch of lowest validation loss (a
# `TrainerCallback`, `training.best_weights_callback`). Then the loss on the whole test split —
# messages neither training nor stopping saw — is measured twice, with the kept weights and with
# the last ones: it says whether stopping was right.

# %%
overfit_train = tasks.training_set(tickets, settings, per_label=profile.task_overtrain_per_label)
validation = tasks.select(tickets, "validation", labels)
unseen = tasks.select(tickets, "test", labels)  # the whole test split: losses are cheap to measure
curve_overtrained = tasks.overtraining_curve(overfit_train, validation, unseen, settings)
stopping = tasks.early_stopping(curve_overtrained)
ax = curve_overtrained.plot(x="epoch", y=["train_loss", "validation_loss"], marker=".",
                            figsize=(7, 3.5), logy=True)
ax.scatter([stopping["best_epoch"], stopping["last_epoch"]], [stopping["test_best"], stopping["test_last"]],
           color="black", marker="x", zorder=3, label="test loss: stopped, last")
ax.axvline(stopping["best_epoch"], color="grey", linestyle="--", label="early stopping")
ax.set_ylabel("cross-entropy loss")
ax.legend()
plt.show()
print(f"{len(overfit_train)} training messages, {len(validation)} validation, {len(unseen)} test; lowest "
      f"validation loss after epoch {stopping['best_epoch']} of {stopping['last_epoch']}: "
      f"{stopping['validation_best']:.3f} → {stopping['validation_last']:.3f} at the end, while the "
      f"training loss fell {stopping['train_best']:.3f} → {stopping['train_last']:.4f}; test loss "
      f"{stopping['test_best']:.3f} with early stopping, {stopping['test_last']:.3f} without")

# %%
# Checkpoint: trained too long, the classifier over-fits (validation loss rises after its best
# epoch while the training loss keeps falling), and stopping at the best validation epoch gives a
# lower loss on the test messages than training to the end.
assert stopping["best_epoch"] < stopping["last_epoch"]
assert stopping["validation_last"] > stopping["validation_best"] and stopping["train_last"] < stopping["train_best"]
assert stopping["test_best"] < stopping["test_last"]

# %% [markdown]
# ## Step 9 — From the command line: `ragft classify`
# The saved systems answer from the command line too, and nothing is trained there: a classifier
# that notebook 07 has not trained is an error naming what trains it.
#
# ```
# ragft classify "can I bring my spaniel on the 10:15?" --method finetuned
# ragft classify --in messages.jsonl --out labels.jsonl --method knn
# ```

# %%
cli.main(["classify", "can I bring my spaniel on the 10:15?", "--method", "finetuned"])
cli.main(["classify", "the 16:45 never left, I want my money back", "--method", "knn"])

# %%
saved = results.save_results({"table": table.reset_index(), "curve": curve, "crossover": cross,
                              "new_intent": new_intent.reset_index(),
                              "overtraining": curve_overtrained, "early_stopping": stopping,
                              "runs": {kind: vars(run) for kind, run in runs.items()},
                              "peak_memory_mb": memory.peak_mb}, settings,
                             provenance=[lm.provenance], stem="tasks")
print(f"results saved to {saved}")

# %% [markdown]
# ## Summary

# %%
print(f"- On {len(test)} test messages the best fine-tuned classifier ({best}) reaches macro-F1 "
      f"{table.loc[best, 'macro_f1']:.3f}, against {table.loc['few-shot', 'macro_f1']:.3f} for "
      f"retrieval few-shot, {table.loc['kNN', 'macro_f1']:.3f} for kNN and "
      f"{table.loc['zero-shot', 'macro_f1']:.3f} for zero-shot, at "
      f"{table.loc[best, 'ms_per_message']:.0f} ms per message instead of "
      f"{table.loc['few-shot', 'ms_per_message']:.0f} ms.")
print(f"- Learning curve: {verdict}.")
print(f"- New intent: indexing {len(new_examples)} examples took {adapt_seconds:.2f} s and gave kNN "
      f"a recall of {recall_knn:.2f}; the classifier needed retraining ({retrain.train_seconds:.0f} s).")

# %% [markdown]
# - For a **task** with enough labelled examples — a fixed set of intents, a style, a format —
#   fine-tuning wins: it learns which words decide, it answers in milliseconds with a small model,
#   and it needs no prompt at all.
# - With a **handful** of examples, retrieval wins: a classifier cannot learn from two messages,
#   while a nearest neighbour can already be right. The learning curve shows where the verdict flips.
# - **Change** favours retrieval: a new intent, or a corrected label, is an index update away;
#   the classifier must be retrained. This is the showdown's freshness experiment (notebook 08),
#   for tasks.
# - The two combine: a kNN or few-shot system serves the new intent today, while its examples
#   accumulate into the next classifier's training set.
#
# ## Exercises
# 1. Give few-shot more examples: `tasks.FewShot(lm.model, lm.tokenizer, collection=collection, k=8)`
#    and evaluate it with `tasks.evaluate(..., test)`. Does macro-F1 rise, and what happens to the
#    latency per message? Expect a longer prompt and slower answers, and a
#    macro-F1 change inside the bootstrap interval.
# 2. Train the MiniLM classifier for one epoch instead of `task_epochs`:
#    `tasks.ensure_classifier("minilm", train, settings.with_budgets(task_epochs=1.0))` (a new
#    folder, so it trains) and load it with the same settings. How much macro-F1 does it lose?
#    Expect fewer steps, a higher final loss and a lower macro-F1.
# 3. Find the messages the best classifier gets wrong:
#    `scored[best][~scored[best]["correct"]]`. Which of them does a precedence rule of
#    `data/README.md` explain (money back is `refund`, a complaint without a money-back request is
#    `complaint`, ...), and which intents does the classifier confuse in the others? Expect most
#    errors to involve `refund` or `complaint`: messages that do, or do not, ask for money back.
# 4. Add `group_travel` with only 3 examples (`tasks.select(tickets, "train", [tasks.NEW_LABEL], 3)`):
#    remove the label from the index first with `tasks.remove_label(collection, tasks.NEW_LABEL)`,
#    index the three, and measure kNN's recall again. Expect some recall (none without examples),
#    at least half of the recall with `task_new_examples` examples.
# 5. Write five messages of your own to `my.jsonl` (one `{"text": ...}` per line) and run
#    `ragft classify --in my.jsonl --out labels.jsonl --method knn` in a terminal. Expect one
#    label per line of `labels.jsonl`, right for most clear messages.
#
# ## Questionnaire
# 1. Why is a classification task a fairer test of fine-tuning than injecting facts?
# 2. How does the zero-shot system turn a language model into a classifier without generating text?
# 3. What does the few-shot system retrieve, and where does it put it?
# 4. What is macro-F1, and why report it next to accuracy?
# 5. Why are the bootstrap intervals of the systems compared, not only their values?
# 6. What does the classification head of `AutoModelForSequenceClassification` add to a model?
# 7. Why is the fine-tuned MiniLM classifier faster per message than few-shot prompting?
# 8. What does LoRA train, and what does it save?
# 9. Where on the learning curve does fine-tuning overtake retrieval, and why not earlier?
# 10. What does each approach have to do when a new intent appears, and how long does it take?
# 11. Why does the validation loss rise while the training loss keeps falling, and why is the test
#     loss, not the validation loss, the fair judge of early stopping?
