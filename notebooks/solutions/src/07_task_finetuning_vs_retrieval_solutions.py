# %% [markdown]
# # 07 · Where fine-tuning wins: a task, not facts — solutions
#
# Worked solutions to the exercises of [notebook 07](../07_task_finetuning_vs_retrieval.ipynb),
# each with a checkpoint that fails when the effect the exercise describes does not hold, and
# answers to its questionnaire. The setup is the notebook's own: the same messages, the same
# `tickets` index (filled by notebook 07, so nothing is embedded again), the same language model,
# and the classifiers notebook 07 trained, which `ensure_classifier` reloads instead of training.
# The one exercise that trains (a one-epoch classifier) trains once, in a folder of its own.

# %%
import pandas as pd
from IPython.display import display

import ragft_helpers  # probes the hub before any Hugging Face library is imported
from ragft_helpers import assets, tasks
from ragft_helpers.config import get_settings, set_seed

settings = get_settings()
set_seed(settings.seed)
profile = settings.profile
labels = tasks.ORIGINAL_LABELS
tickets = tasks.load_tickets()
train = tasks.training_set(tickets, settings)
test = tasks.test_set(tickets, settings)
collection = tasks.open_tickets(settings)
tasks.remove_label(collection, tasks.NEW_LABEL)  # held back, as notebook 07 starts
added, _ = tasks.index_tickets(collection, train)
runs = {kind: tasks.ensure_classifier(kind, train, settings) for kind in tasks.CLASSIFIERS}
lm = assets.load_causal_lm(settings)
few_shot = tasks.FewShot(lm.model, lm.tokenizer, collection=collection, k=profile.task_shots,
                         max_tokens=profile.task_max_length)
classifiers = {kind: tasks.load_classifier(kind, train, settings) for kind in tasks.CLASSIFIERS}
scored = {system.name: tasks.evaluate(system, test, progress=False, settings=settings)
          for system in [few_shot, *classifiers.values()]}
table = tasks.results_table(list(scored.values()), labels)
fine_tuned = [c.name for c in classifiers.values()]
best = table.loc[fine_tuned, "macro_f1"].idxmax()
print(f"{len(train)} training messages ({added} indexed now), {len(test)} test messages; "
      f"best fine-tuned classifier: {best}")
table.round(3)

# %% [markdown]
# ## Exercise 1 — Few-shot with 8 examples

# %%
few_shot_8 = tasks.FewShot(lm.model, lm.tokenizer, collection=collection, k=8)
few_shot_8.name = "few-shot, k=8"
scored_8 = tasks.evaluate(few_shot_8, test, progress=False, settings=settings)
shots = tasks.results_table([scored["few-shot"], scored_8], labels)
example = test[0].text
prompt_tokens = {k: len(lm.tokenizer(tasks.build_task_prompt(example, lm.tokenizer, labels,
                                                             system.examples(example)))["input_ids"])
                 for k, system in ((profile.task_shots, few_shot), (8, few_shot_8))}
print(f"prompt for one message: {prompt_tokens[profile.task_shots]} tokens with "
      f"{profile.task_shots} examples, {prompt_tokens[8]} with 8")
shots[["accuracy", "macro_f1", "macro_f1_low", "macro_f1_high", "ms_per_message"]].round(3)

# %%
# Checkpoint: 8 examples make the prompt longer (the instruction and the ten definitions are
# the same). The time per message, in the table, grows with it; times depend on what else the
# machine is doing, so the checkpoint is on the prompt.
assert prompt_tokens[8] > 1.3 * prompt_tokens[profile.task_shots]

# %% [markdown]
# Macro-F1 moves by the amount in the table — with this few test messages, well inside the
# bootstrap interval either way. More neighbours show the model more of each intent's wording,
# but a 135M model reading 8 labelled examples also gets more chances to copy a wrong label;
# the latency grows with the prompt for certain.

# %% [markdown]
# ## Exercise 2 — One epoch instead of `task_epochs`

# %%
one_epoch_settings = settings.with_budgets(task_epochs=1.0)
one_epoch_run = tasks.ensure_classifier("minilm", train, one_epoch_settings)
one_epoch = tasks.load_classifier("minilm", train, one_epoch_settings, name="MiniLM, 1 epoch")
scored_one = tasks.evaluate(one_epoch, test, progress=False, settings=settings)
epochs = tasks.results_table([scored[classifiers["minilm"].name], scored_one], labels)
epochs["steps"] = [runs["minilm"].steps, one_epoch_run.steps]
epochs["final loss"] = [runs["minilm"].final_loss, one_epoch_run.final_loss]
epochs["train s"] = [runs["minilm"].train_seconds, one_epoch_run.train_seconds]
lost = epochs["macro_f1"].iloc[0] - epochs["macro_f1"].iloc[1]
print(f"one epoch: {one_epoch_run.steps} steps instead of {runs['minilm'].steps}; macro-F1 lost: {lost:+.3f}")
epochs[["macro_f1", "macro_f1_low", "macro_f1_high", "steps", "final loss", "train s"]].round(3)

# %%
# Checkpoints: its own folder with fewer steps (at least `task_min_steps`); it trains less far
# (higher final loss) and loses macro-F1 against the full budget.
assert tasks.classifier_dir("minilm", train, labels, one_epoch_settings) != \
    tasks.classifier_dir("minilm", train, labels, settings)
assert profile.task_min_steps <= one_epoch_run.steps < runs["minilm"].steps
assert one_epoch_run.final_loss > runs["minilm"].final_loss
assert epochs["macro_f1"].iloc[1] < epochs["macro_f1"].iloc[0]

# %% [markdown]
# With few messages per intent, one pass is not enough for the new classification head to
# separate ten intents (at `smoke` the step floor `task_min_steps` even gives "one epoch" a few
# extra steps); the default budget's several epochs are cheap for a 22M-parameter encoder.

# %% [markdown]
# ## Exercise 3 — What the best classifier gets wrong

# %%
errors = scored[best][~scored[best]["correct"]]
RULES = {  # the precedence rules of data/README.md, by the intents they separate
    "money back is refund": {"refund"},
    "vehicles and bicycles are vehicles": {"vehicles"},
    "animals are pets": {"pets"},
    "complaint without a money-back request": {"complaint"},
}


def rule_for(label, predicted):
    pair = {label, predicted}
    return next((name for name, intents in RULES.items() if pair & intents), "no precedence rule")


errors = errors.assign(rule=[rule_for(t, p) for t, p in zip(errors["label"], errors["predicted"])],
                       text=[next(t.text for t in test if t.id == i) for i in errors["id"]])
with pd.option_context("display.max_colwidth", 120):
    display(errors[["label", "predicted", "rule", "text"]])
print("errors by precedence rule:", errors["rule"].value_counts().to_dict())
unexplained = errors[errors["rule"] == "no precedence rule"]
confused = (unexplained["label"] + " → " + unexplained["predicted"]).value_counts()
print("confusions no rule explains:", confused.to_dict())

# %%
# Checkpoints: the listed rows are exactly the best classifier's errors (as many as its accuracy
# says), and predicting them again gives the same wrong intents.
assert len(errors) == round((1 - table.loc[best, "accuracy"]) * len(test)) and len(errors) > 0
assert (errors["label"] != errors["predicted"]).all()
best_system = next(c for c in classifiers.values() if c.name == best)
assert [best_system.predict(text).label for text in errors["text"]] == list(errors["predicted"])

# %% [markdown]
# The rules explain the errors that involve `refund` or `complaint`: messages about a cancelled
# or delayed sailing, or a booking, that also ask for money back — or do not. Those share most of
# their words with `disruption`, `booking` or `complaint` messages; only a phrase such as "my
# money back" decides, and a classifier trained on a few messages per intent has not always
# learned to weigh it above the rest. The other errors (the second printout) are between intents
# that no rule separates because their *topics* overlap: `booking` and `fares` (a booking message
# mentions prices), `timetable` and `disruption` (both are about sailings — data/README.md calls
# that boundary out), `lost_property` and whatever was lost on board. More labelled examples of
# exactly these pairs is what would help.

# %% [markdown]
# ## Exercise 4 — `group_travel` with 3 examples, then 10

# %%
new_labels = (*labels, tasks.NEW_LABEL)
new_test = tasks.new_intent_set(tickets, settings)
knn_new = tasks.KNN(collection, labels=new_labels, k=profile.task_knn_k)
recalls, other_accuracy = {}, {}
removed = tasks.remove_label(collection, tasks.NEW_LABEL)
for n in (0, 3, profile.task_new_examples):
    examples = tasks.select(tickets, "train", [tasks.NEW_LABEL], n)
    tasks.index_tickets(collection, examples)  # adds only the ones not indexed yet
    rows = tasks.evaluate(knn_new, new_test, progress=False, settings=settings)
    recalls[n] = tasks.recall(rows, tasks.NEW_LABEL)
    other_accuracy[n] = rows[rows["label"] != tasks.NEW_LABEL]["correct"].mean()
tasks.remove_label(collection, tasks.NEW_LABEL)  # held back again, as notebook 07 starts
recall_table = pd.DataFrame({f"kNN recall on {tasks.NEW_LABEL}": recalls,
                             "accuracy on the other intents": other_accuracy}).rename_axis("examples indexed")
recall_table.round(2).T

# %%
# Checkpoints: without examples kNN cannot name the intent; three indexed examples already give
# it at least half the recall that ten give.
assert recalls[0] == 0
assert recalls[3] > 0
assert recalls[3] >= 0.5 * recalls[profile.task_new_examples]

# %% [markdown]
# Three examples are enough for kNN to recognise the new intent on many messages. The vote is
# balanced: each intent's summed similarity is divided by how many of its messages are indexed,
# so three `group_travel` examples are not outvoted by dozens of booking and fares messages just
# by their number. More examples cover more ways of asking, but the recall need not rise with
# every example: each new one also wins some messages of other intents (the second row). Either
# way, adapting took an index update of a fraction of a second — no training.

# %% [markdown]
# ## Exercise 5 — `ragft classify` on your own messages
# The command is run through `cli.main` with the arguments you would type in a terminal.

# %%
import json
import tempfile
from pathlib import Path

from ragft_helpers import cli

mine = {
    "My collie gets seasick, can she stay in the car on the crossing?": "pets",
    "I left my reading glasses on the 14:20 from Orvanay yesterday, has anyone handed them in?": "lost_property",
    "What time is the first boat to Dunmarrow on Sundays?": "timetable",
    "Is there a lift from the car deck to the lounge for a wheelchair user?": "accessibility",
    "How much is a day return for two adults?": "fares",
}
folder = Path(tempfile.mkdtemp())
(folder / "my.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in mine))
assert cli.main(["classify", "--in", str(folder / "my.jsonl"), "--out", str(folder / "labels.jsonl"),
                 "--method", "knn"]) == 0
records = [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines()]
mine_table = pd.DataFrame([{"message": r["text"], "intended": mine[r["text"]], "kNN says": r["label"]}
                           for r in records])
mine_table

# %%
# Checkpoints: one label per message, each one of the ten intents, and the intended one for at
# least four of the five.
assert [r["text"] for r in records] == list(mine)
assert all(r["label"] in labels for r in records)
assert (mine_table["intended"] == mine_table["kNN says"]).sum() >= 4

# %% [markdown]
# ## Questionnaire answers
# 1. **A fairer test.** Injecting facts asks fine-tuning to store and later recall specific
#    strings after a few passes, which it is bad at and retrieval is built for. Sorting messages
#    into a fixed set of intents is what fine-tuning is meant for — a narrow task with labelled
#    examples, where the model must learn *which words decide*, not remember facts — so both
#    approaches get their best use case.
# 2. **Zero-shot without generating.** The prompt lists every intent with a one-line definition
#    and the message; for each intent *name* the model scores the mean log-probability per token
#    of that name as the answer (`scoring.choose_option`, one forward pass over the options), and
#    the most likely name is the prediction. Nothing is sampled, so the answer is always a valid
#    intent.
# 3. **Few-shot** retrieves the `task_shots` labelled training messages most similar to the new
#    one from the `tickets` Chroma index (MiniLM embeddings, cosine), and puts them with their
#    intents as earlier user/assistant turns of the chat, before the message — the most similar
#    last, nearest the message.
# 4. **Macro-F1** computes the F1 (the harmonic mean of precision and recall) of each intent and
#    averages them with equal weight. Accuracy counts messages, so a system that is good at the
#    frequent or easy intents and useless on one intent can still score well; macro-F1 makes every
#    intent count the same and exposes that (here the test set is balanced, but the new-intent
#    experiment is not).
# 5. **Intervals.** With tens of test messages a difference of a few messages is noise: another
#    sample of messages could reverse it. Bootstrap intervals show how much each value could move
#    by chance; only when one system's interval lies wholly above another's (`tasks.separated`) is
#    the difference treated as real.
# 6. **The classification head** is a new linear layer from the model's final hidden state (the
#    last token's, for a causal LM; the pooled output for an encoder) to one score per intent,
#    initialised at random and trained with cross-entropy on the intents; the language-model head
#    is not used.
# 7. **Faster per message.** The MiniLM classifier runs one forward pass of a 22M-parameter encoder
#    over the message alone. Few-shot runs a 135M-parameter language model over a prompt with the
#    instruction, ten definitions, the retrieved examples and the message, and scores ten intent
#    names — plus a retrieval.
# 8. **LoRA** freezes the model's weights and trains low-rank adapters (`B·A`, rank `lora_rank`) on
#    the attention projections, plus the new classification head. It saves memory (no gradients
#    or optimiser state for the frozen weights) and disk (the adapter and head are a few MB instead
#    of a full model).
# 9. **The crossover** depends on the budget, and step 6 of notebook 07 prints where it falls in
#    each run: the fine-tuned classifier needs enough labelled messages per intent to pull ahead
#    of retrieval (few-shot and kNN), and at the `smoke` profile, with at most 20 per intent, it
#    may not get there at all — kNN can stay ahead over the whole curve. Not earlier, because a
#    classifier learns its decision rule from scratch through a randomly initialised head, and a
#    few examples per intent cannot pin it down, while a nearest neighbour can be right from the
#    first example; each added example helps the classifier more than it helps a vote among
#    neighbours.
# 10. **A new intent.** Retrieval indexes the new labelled examples — embeddings of a handful of
#    messages, a fraction of a second — and kNN or few-shot can predict the intent at once. The
#    classifier has a fixed set of ten outputs: it cannot say `group_travel` at all until it is
#    retrained with an eleventh output, which takes a full training run (tens of seconds at
#    `smoke` for MiniLM, minutes at larger budgets).
# 11. **Over-fitting.** Each epoch pushes the training messages' probabilities further toward
#    their labels, so the training loss keeps falling; on validation messages the model's few
#    mistakes become more and more confident, and one confident mistake costs more loss than many
#    right answers save, so the validation loss turns and climbs. The validation split chose the
#    stopping epoch, so its loss there is the lowest by construction; only messages that played
#    no part in training or in choosing — the test messages — can show that stopping early
#    generalises better. Weight decay is the other fix: it pulls the weights toward zero at every
#    step, which slows the growth of confidence.
