"""A task instead of facts: sorting customer messages into intents, by retrieval or by fine-tuning.

One harness scores every system on the same messages (notebook 07, ``ragft classify``):

- **zero-shot**: the instruction lists the intents with their definitions; the model's choice is
  the intent name it finds most likely (:func:`ragft_helpers.scoring.choose_option`);
- **few-shot** (retrieval for a task): the most similar labelled training messages, retrieved
  from a Chroma collection, go into the prompt as examples; same scoring;
- **kNN**: a similarity-weighted vote of the retrieved neighbours, no language model;
- **fine-tuned classifiers**: a classification head trained with ``Trainer`` on the small MiniLM
  encoder, or on the causal LM (all weights, or LoRA).

Trained classifiers are saved in ``RAGFT_CACHE_DIR/finetuned/<profile>/task-<kind>-<key>``, keyed
by the settings and training messages that produce them: a re-run reloads, a changed setting
trains anew. The messages are ``data/tickets/`` (see ``data/README.md``).
"""
from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ragft_helpers.assets import (SOURCE_HUB, AssetError, causal_lm_candidates, embedding_candidates,
                                  load_causal_lm, save_checkpoint)
from ragft_helpers import score_cache
from ragft_helpers.checkpoints import (keyed_dir, peft_deprecation_hidden, portable_location, text_fingerprint,
                                      write_settings)
from ragft_helpers.config import DATA_DIR, Settings, get_settings, set_seed
from ragft_helpers.harness import bootstrap_ci
from ragft_helpers.lm import ensure_pad_token
from ragft_helpers.machine import percentiles, release_freed_memory
from ragft_helpers.rag import as_data, fit_question, has_chat_template
from ragft_helpers.scoring import choose_option, encode_prefix
from ragft_helpers.store import open_collection
from ragft_helpers.training import best_weights_callback, measured_train, training_arguments

TICKETS_DIR = DATA_DIR / "tickets"
COLLECTION = "tickets"  # the Chroma collection of labelled training messages
NEW_LABEL = "group_travel"  # held back for the "a new intent appears" experiment
# Short definitions for the instruction (data/README.md has the full ones and the precedence rules).
DEFINITIONS = {
    "booking": "making, changing, checking or cancelling a passenger reservation (no money back)",
    "refund": "asking for money back or compensation, for any reason",
    "timetable": "sailing times, first and last boats, how often, how long a crossing takes",
    "fares": "passenger prices, ticket types, discounts, Islander fares, the Tern Card",
    "disruption": "whether a sailing is running, weather cancellations, delays (no money back)",
    "lost_property": "items lost or found on a ferry or at a port",
    "accessibility": "help for disabled passengers: wheelchairs, lifts, boarding assistance",
    "pets": "travelling with a dog or any other animal",
    "vehicles": "cars, motorcycles, vans, coaches and bicycles",
    "complaint": "unhappy with the service, staff or facilities (no money back)",
    NEW_LABEL: "a group of 10 or more passengers, school or club trips, group discounts",
}
ORIGINAL_LABELS = tuple(label for label in DEFINITIONS if label != NEW_LABEL)
INSTRUCTION = ("You sort customer messages sent to Quennick Sound Ferries, a ferry company. "
               "Reply with the one intent that fits the message best.")
METHODS = ("zero-shot", "few-shot", "knn", "finetuned")
RUN_FILE = "task_run.json"


# ---- the messages --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ticket:
    id: str
    text: str
    label: str
    split: str
    shot: int  # position among the messages of its label and split, in file order


def load_tickets(folder: Path = TICKETS_DIR) -> list[Ticket]:
    """Every message of ``folder/<label>.jsonl``, label by label in file order."""
    tickets = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        seen: dict[str, int] = defaultdict(int)
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                tickets.append(Ticket(row["id"], row["text"], row["label"], row["split"],
                                      seen[row["split"]]))
                seen[row["split"]] += 1
    if not tickets:
        raise ValueError(f"No messages in {folder}: expected <label>.jsonl files (data/README.md).")
    return tickets


def select(tickets: Iterable[Ticket], split: str, labels: Sequence[str],
           per_label: int | None = None) -> list[Ticket]:
    """The messages of ``split`` with one of ``labels``: the first ``per_label`` of each (all when
    None), so smaller training sets are nested in larger ones."""
    wanted = set(labels)
    return [t for t in tickets if t.split == split and t.label in wanted
            and (per_label is None or t.shot < per_label)]


def sample_per_label(tickets: Sequence[Ticket], per_label: int | None, seed: int) -> list[Ticket]:
    """``per_label`` messages of each label drawn with ``seed`` (all when None), in input order."""
    if per_label is None:
        return list(tickets)
    by_label: dict[str, list[Ticket]] = defaultdict(list)
    for ticket in tickets:
        by_label[ticket.label].append(ticket)
    chosen = set()
    for label, group in by_label.items():
        chosen.update(t.id for t in random.Random(f"{seed}:{label}").sample(group, min(per_label, len(group))))
    return [t for t in tickets if t.id in chosen]


def training_set(tickets: Sequence[Ticket], settings: Settings, *, per_label: int | None = None,
                 labels: Sequence[str] = ORIGINAL_LABELS) -> list[Ticket]:
    """The labelled training messages a system learns from: ``per_label`` of each label (default:
    the profile's ``task_train_per_label``; None = all 60)."""
    per_label = settings.profile.task_train_per_label if per_label is None else per_label
    return select(tickets, "train", labels, per_label)


def test_set(tickets: Sequence[Ticket], settings: Settings, *,
             labels: Sequence[str] = ORIGINAL_LABELS, per_label: int | None = None) -> list[Ticket]:
    """The test messages every system is scored on: the profile's ``task_test_per_label`` of each
    label (drawn with the seed; None = the whole test split)."""
    per_label = settings.profile.task_test_per_label if per_label is None else per_label
    return sample_per_label(select(tickets, "test", labels), per_label, settings.seed)


def new_intent_set(tickets: Sequence[Ticket], settings: Settings, split: str = "test") -> list[Ticket]:
    """The messages "a new intent appears" is scored on: ``task_curve_test_per_label`` messages of
    each original intent (drawn with the seed) and every :data:`NEW_LABEL` message of ``split``."""
    splits = sorted({t.split for t in tickets})
    if split not in splits:
        raise ValueError(f"Unknown split {split!r}; the messages have: {', '.join(splits)}.")
    others = select(tickets, split, ORIGINAL_LABELS)
    return (sample_per_label(others, settings.profile.task_curve_test_per_label, settings.seed)
            + select(tickets, split, [NEW_LABEL]))


def check_message(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The message is empty: give the text of a customer message, e.g. "
                         "'can I bring my dog on the ferry?'.")
    return text.strip()


# ---- prompts -------------------------------------------------------------------------------------

def label_name(label: str) -> str:
    """How an intent is written in prompts and scored as an option: ``lost_property`` → ``lost property``."""
    return label.replace("_", " ")


def instruction(labels: Sequence[str]) -> str:
    lines = [f"- {label_name(label)}: {DEFINITIONS.get(label, label_name(label))}" for label in labels]
    return INSTRUCTION + "\nIntents:\n" + "\n".join(lines)


def _messages(labels: Sequence[str], text: str | None, examples: Sequence[Ticket], tokenizer):
    messages = [{"role": "system", "content": instruction(labels)}]
    for example in examples:
        messages += [{"role": "user", "content": f"Message: {as_data(example.text, tokenizer)}"},
                     {"role": "assistant", "content": label_name(example.label)}]
    if text is not None:
        messages.append({"role": "user", "content": f"Message: {as_data(text, tokenizer)}"})
    return messages


def build_task_prompt(text: str, tokenizer, labels: Sequence[str] = ORIGINAL_LABELS,
                      examples: Sequence[Ticket] = ()) -> str:
    """The prompt after which the intent name is scored: the instruction with every intent and its
    definition, then each example (message and its intent), then the message.

    With a chat template the examples are earlier user/assistant turns; without one it is a plain
    ``Message: ... / Intent: ...`` completion prompt. Messages pass through :func:`rag.as_data`, so
    a message cannot fake a turn.
    """
    text = check_message(text)
    if tokenizer is not None and has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(_messages(labels, text, examples, tokenizer),
                                             tokenize=False, add_generation_prompt=True)
    shots = "".join(f"Message: {as_data(e.text, tokenizer)}\nIntent: {label_name(e.label)}\n\n"
                    for e in examples)
    return f"{instruction(labels)}\n\n{shots}Message: {as_data(text, tokenizer)}\nIntent:"


def prompt_prefix(tokenizer, labels: Sequence[str]) -> str:
    """The beginning every task prompt for ``labels`` shares (the instruction): encoded once."""
    if tokenizer is not None and has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(_messages(labels, None, (), tokenizer), tokenize=False)
    return f"{instruction(labels)}\n\n"


# ---- the systems ---------------------------------------------------------------------------------

@dataclass
class Prediction:
    label: str
    scores: dict[str, float]  # per label: mean log-prob (LM), vote share (kNN), probability (classifier)
    examples: list[Ticket] = field(default_factory=list)  # the retrieved neighbours, if any


@dataclass
class ZeroShot:
    """The language model picks the most likely intent name after the instruction."""

    model: Any
    tokenizer: Any
    labels: Sequence[str] = ORIGINAL_LABELS
    max_tokens: int = 128  # longer messages are cut, with a warning
    name: str = "zero-shot"

    def __post_init__(self):
        self.labels = tuple(self.labels)
        self._prefix = encode_prefix(self.model, self.tokenizer, prompt_prefix(self.tokenizer, self.labels))

    def examples(self, text: str) -> list[Ticket]:
        return []

    def predict(self, text: str) -> Prediction:
        text = fit_question(check_message(text), self.tokenizer, self.max_tokens)
        examples = self.examples(text)
        prompt = build_task_prompt(text, self.tokenizer, self.labels, examples)
        index, scores = choose_option(self.model, self.tokenizer, prompt,
                                      [label_name(label) for label in self.labels], prefix=self._prefix)
        return Prediction(self.labels[index], dict(zip(self.labels, scores)), examples)


def label_condition(labels: Sequence[str], per_label: int | None = None) -> dict:
    """Chroma's ``where`` for the indexed messages of ``labels``, the first ``per_label`` of each
    (all when None)."""
    condition: dict = {"label": {"$in": list(labels)}}
    if per_label is not None:
        condition = {"$and": [condition, {"shot": {"$lt": per_label}}]}
    return condition


def neighbours(collection, text: str, k: int, labels: Sequence[str],
               per_label: int | None = None) -> list[tuple[Ticket, float]]:
    """The ``k`` indexed training messages most similar to ``text`` (cosine), best first, among
    ``labels`` and the first ``per_label`` messages of each (all when None)."""
    result = collection.query(query_texts=[check_message(text)], n_results=k,
                              where=label_condition(labels, per_label),
                              include=["documents", "metadatas", "distances"])
    return [(Ticket(id_, document, meta["label"], "train", int(meta["shot"])), 1.0 - distance)
            for id_, document, meta, distance in zip(result["ids"][0], result["documents"][0],
                                                     result["metadatas"][0], result["distances"][0])]


@dataclass
class FewShot(ZeroShot):
    """Zero-shot plus the ``k`` most similar labelled messages as examples in the prompt (the most
    similar last, nearest the message)."""

    collection: Any = None
    k: int = 4
    per_label: int | None = None  # use only the first n training messages of each label
    name: str = "few-shot"

    def examples(self, text: str) -> list[Ticket]:
        found = neighbours(self.collection, text, self.k, self.labels, self.per_label)
        return [ticket for ticket, _ in reversed(found)]


@dataclass
class KNN:
    """The intent with the largest summed similarity among the ``k`` nearest labelled messages.

    ``balanced``: each intent's sum is divided by how many of its messages the index holds, so an
    intent with 10 examples is not outvoted by intents with 60 just by their number (a uniform
    prior over intents). With as many messages for every intent it changes nothing."""

    collection: Any
    labels: Sequence[str] = ORIGINAL_LABELS
    k: int = 10
    per_label: int | None = None
    balanced: bool = True
    name: str = "kNN"

    def __post_init__(self):
        self._counts: tuple[int, Counter] | None = None  # (index size, messages per label)

    def label_counts(self) -> Counter:
        """How many indexed messages of each label can vote; counted again when the index's size
        changes."""
        size = self.collection.count()
        if self._counts is None or self._counts[0] != size:
            found = self.collection.get(where=label_condition(self.labels, self.per_label),
                                        include=["metadatas"])
            self._counts = (size, Counter(meta["label"] for meta in found["metadatas"]))
        return self._counts[1]

    def predict(self, text: str) -> Prediction:
        found = neighbours(self.collection, text, self.k, self.labels, self.per_label)
        counts = self.label_counts() if self.balanced else None
        votes = dict.fromkeys(self.labels, 0.0)
        for ticket, similarity in found:
            weight = 1.0 / max(counts[ticket.label], 1) if counts is not None else 1.0
            votes[ticket.label] += max(similarity, 0.0) * weight
        total = sum(votes.values()) or 1.0
        scores = {label: value / total for label, value in votes.items()}
        best = max(self.labels, key=lambda label: (scores[label], -self.labels.index(label)))
        return Prediction(best, scores, [ticket for ticket, _ in found])


@dataclass
class FineTuned:
    """A sequence classifier: the label with the highest probability."""

    model: Any
    tokenizer: Any
    labels: Sequence[str]
    max_length: int = 128
    name: str = "fine-tuned"

    def predict(self, text: str) -> Prediction:
        import torch

        encoded = self.tokenizer(check_message(text), truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(next(self.model.parameters()).device)
        with torch.inference_mode():
            probabilities = self.model(**encoded).logits[0].float().softmax(-1).tolist()
        scores = dict(zip(self.labels, probabilities))
        return Prediction(max(scores, key=scores.__getitem__), scores)


# ---- the index -----------------------------------------------------------------------------------

def open_tickets(settings: Settings | None = None, client=None):
    """The Chroma collection of labelled messages (MiniLM embeddings, cosine), made if missing."""
    return open_collection(settings or get_settings(), name=COLLECTION, client=client)


def index_tickets(collection, tickets: Sequence[Ticket]) -> tuple[int, float]:
    """Add the messages not yet in ``collection`` (by id); ``(added, seconds)``. A re-run adds none."""
    start = time.perf_counter()
    present = set(collection.get(ids=[t.id for t in tickets], include=[])["ids"]) if tickets else set()
    new = [t for t in tickets if t.id not in present]
    for i in range(0, len(new), 128):
        batch = new[i:i + 128]
        collection.add(ids=[t.id for t in batch], documents=[t.text for t in batch],
                       metadatas=[{"label": t.label, "shot": t.shot} for t in batch])
    return len(new), time.perf_counter() - start


def remove_label(collection, label: str) -> int:
    """Delete every indexed message of ``label``; how many there were."""
    found = collection.get(where={"label": label}, include=[])["ids"]
    if found:
        collection.delete(ids=found)
    return len(found)


# ---- fine-tuned classifiers ----------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifierKind:
    name: str
    base: str  # "encoder" (MiniLM) or "causal-lm"
    lora: bool = False
    attention: str | None = None  # transformers' attn_implementation; None: the library's default


# MiniLM computes attention with plain matrix products ("eager"): for messages of a few dozen
# tokens the backward pass of torch's fused CPU attention (sdpa) is the slower one. The
# smoke classifier, 75 steps: 16.8 s with sdpa, 15.5 s eager, the same losses
# (benchmarks/bench_classifier_training.py measures both in one process).
ENCODER_ATTENTION = "eager"

CLASSIFIERS = {kind.name: kind for kind in (ClassifierKind("minilm", "encoder",
                                                           attention=ENCODER_ATTENTION),
                                            ClassifierKind("lm-full", "causal-lm"),
                                            ClassifierKind("lm-lora", "causal-lm", lora=True))}


@dataclass
class ClassifierRun:
    """What training one classifier cost and reached."""

    kind: str
    labels: list[str]
    training_messages: int
    steps: int
    train_seconds: float
    peak_memory_mb: float
    first_loss: float  # mean of the first eighth of the logged losses (training.TrainingCost)
    final_loss: float  # mean of the last eighth
    trainable_params: int
    total_params: int


def how_to_train(kind: str) -> str:
    return (f"Run notebook 07 (07_task_finetuning_vs_retrieval.ipynb), or "
            f"tasks.ensure_classifier({kind!r}, tasks.training_set(tasks.load_tickets(), settings), "
            "settings), first: it trains the classifier and saves it there")


def _kind(name: str) -> ClassifierKind:
    if name not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier {name!r}; use one of {list(CLASSIFIERS)}.")
    return CLASSIFIERS[name]


def _base(kind: ClassifierKind, settings: Settings):
    """The pretrained model a classifier starts from (name, location, local only)."""
    if kind.base == "encoder":
        candidate = embedding_candidates()[0][0]
    else:
        candidate = causal_lm_candidates(settings)[0][0]
    return candidate


# MiniLM's optimiser: torch's fused AdamW, the same update rule in one kernel per step (the
# classifier 21.1 -> 16.3 s at smoke, the same losses; benchmarks/README.md, "Fused AdamW").
ENCODER_OPTIMIZER = "adamw_torch_fused"


def classifier_budget(kind: ClassifierKind, settings: Settings) -> dict[str, Any]:
    """Epochs, learning rate and optimiser of a classifier kind, from the profile (MiniLM trains
    with :data:`ENCODER_OPTIMIZER`; the causal-LM classifiers with ``task_lm_optimizer``, Adafactor
    by default, to keep memory low)."""
    p = settings.profile
    if kind.base == "encoder":
        return {"epochs": p.task_epochs, "learning_rate": p.task_learning_rate,
                "optimizer": ENCODER_OPTIMIZER}
    factor = p.lora_learning_rate_factor if kind.lora else 1.0
    return {"epochs": p.task_lm_epochs, "learning_rate": p.task_lm_learning_rate * factor,
            "optimizer": p.task_lm_optimizer}


def classifier_spec(kind_name: str, train: Sequence[Ticket], labels: Sequence[str],
                    settings: Settings) -> dict[str, Any]:
    """What a classifier's weights depend on: base model, labels, training messages, budgets."""
    kind = _kind(kind_name)
    p = settings.profile
    base = _base(kind, settings)
    spec = {"kind": kind.name, "base": base.name, "base_source": portable_location(base.location, settings),
            "labels": list(labels),
            "training_messages": text_fingerprint(f"{t.label}\t{t.text}" for t in train),
            "batch_size": p.task_batch_size, "max_length": p.task_max_length,
            "min_steps": p.task_min_steps,
            "warmup_fraction": p.warmup_fraction, "seed": settings.seed,
            **classifier_budget(kind, settings)}
    if kind.attention is not None:
        spec["attention"] = kind.attention
    if kind.lora:
        spec["lora_rank"] = p.lora_rank
    return spec


def classifier_dir(kind_name: str, train: Sequence[Ticket], labels: Sequence[str],
                   settings: Settings) -> Path:
    """``RAGFT_CACHE_DIR/finetuned/<profile>/task-<kind>-<key>``, keyed by :func:`classifier_spec`."""
    parent = settings.cache_dir / "finetuned" / settings.profile.name
    return keyed_dir(parent, f"task-{kind_name}", classifier_spec(kind_name, train, labels, settings))


def training_steps(n_messages: int, settings: Settings, epochs: float, min_steps: int = 1) -> int:
    """``epochs`` over the messages in batches of ``task_batch_size``, at least ``min_steps``."""
    return max(min_steps, math.ceil(epochs * n_messages / settings.profile.task_batch_size))


def _not_a_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in record.getMessage()


@contextmanager
def _new_head_expected():
    """A classification head is new by design: transformers logs its freshly initialised weights
    as a MISSING-weights load report. Only that report, only during this load, is dropped (the
    logger's level is left alone: transformers reads it to decide what else to check)."""
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addFilter(_not_a_load_report)
    try:
        yield
    finally:
        logger.removeFilter(_not_a_load_report)


def _load_base(kind: ClassifierKind, labels: Sequence[str], settings: Settings, folder: Path | None = None):
    """The sequence classifier with a new head (or, with ``folder``, a saved full classifier)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = _base(kind, settings)
    if kind.base == "causal-lm" and base.gguf_file is not None and not (Path(base.location) / "config.json").is_file():
        load_causal_lm(settings, verbose=False)  # converts the bundled model once
    location = str(folder) if folder is not None else base.location
    local = folder is not None or base.source != SOURCE_HUB
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(location, local_files_only=local))
    attention = {} if kind.attention is None else {"attn_implementation": kind.attention}
    with _new_head_expected():
        model = AutoModelForSequenceClassification.from_pretrained(
            location, local_files_only=local, num_labels=len(labels),
            id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
            **attention)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _wrap_lora(model, rank: int):
    from peft import LoraConfig, get_peft_model

    targets = ["c_attn"] if model.config.model_type == "gpt2" else ["q_proj", "v_proj"]
    config = LoraConfig(task_type="SEQ_CLS", r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                        target_modules=targets, fan_in_fan_out=targets == ["c_attn"])
    with peft_deprecation_hidden():
        return get_peft_model(model, config)


def encode_messages(tickets: Sequence[Ticket], labels: Sequence[str], tokenizer, max_length: int):
    """A ``datasets.Dataset`` of token ids and label ids (tokenized with a batched ``map``)."""
    from datasets import Dataset

    ids = {label: i for i, label in enumerate(labels)}
    dataset = Dataset.from_dict({"text": [t.text for t in tickets], "label": [ids[t.label] for t in tickets]})
    return dataset.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
                       batched=True, remove_columns=["text"], desc="Tokenizing messages")


def train_classifier(kind_name: str, train: Sequence[Ticket], labels: Sequence[str],
                     settings: Settings, *, base=None):
    """Train a classification head (and the model under it) on ``train`` with ``Trainer``.

    ``base``: a ``(model, tokenizer)`` to start from instead of the pretrained one (tests pass
    tiny models). Returns ``(model, tokenizer, ClassifierRun)``.
    """
    from transformers import DataCollatorWithPadding, Trainer

    kind = _kind(kind_name)
    labels = list(labels)
    if not train:
        raise ValueError("No training messages: a classifier needs at least one labelled message.")
    missing = sorted({t.label for t in train} - set(labels))
    if missing:
        raise ValueError(f"Training messages carry labels {missing} that are not in {labels}.")
    set_seed(settings.seed)
    model, tokenizer = base or _load_base(kind, labels, settings)
    tokenizer = ensure_pad_token(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    if kind.lora:
        model = _wrap_lora(model, settings.profile.lora_rank)
    p = settings.profile
    budget = classifier_budget(kind, settings)
    steps = training_steps(len(train), settings, budget["epochs"],
                           p.task_min_steps if kind.base == "encoder" else 1)
    dataset = encode_messages(train, labels, tokenizer, p.task_max_length)
    with tempfile.TemporaryDirectory(prefix="task-run-") as output_dir:
        # The causal-LM classifiers recompute each layer's activations in the backward pass instead
        # of keeping them (the same losses; at laptop 4.7 GB peak without it, see benchmarks/README.md).
        args = training_arguments(settings, output_dir, max_steps=steps, learning_rate=budget["learning_rate"],
                                  activation_checkpointing=kind.base != "encoder",
                                  per_device_train_batch_size=p.task_batch_size,
                                  gradient_accumulation_steps=1, eval_strategy="no", eval_on_start=False,
                                  save_strategy="no", logging_steps=max(1, steps // 10),
                                  optim=budget["optimizer"], weight_decay=0.01)
        trainer = Trainer(model=model, args=args, train_dataset=dataset,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
        cost = measured_train(trainer)
    model.eval()
    run = ClassifierRun(kind.name, labels, len(train), steps, cost.seconds, cost.peak_memory_mb,
                        cost.first_loss, cost.final_loss, cost.trainable_params, cost.total_params)
    return model, tokenizer, run


def overtraining_curve(train: Sequence[Ticket], validation: Sequence[Ticket], test: Sequence[Ticket],
                       settings: Settings, *, epochs: int | None = None, weight_decay: float = 0.0,
                       labels: Sequence[str] = ORIGINAL_LABELS, base=None):
    """Train the MiniLM classifier far too long on ``train`` and record, after every epoch, the
    training loss and the loss on ``validation``: one row per epoch (``epoch``, ``train_loss``,
    ``validation_loss``, ``test_loss``). The learning rate stays constant, so nothing but stopping
    limits the training; ``weight_decay`` adds that regulariser. Early stopping keeps the weights
    of the epoch of lowest validation loss (:func:`early_stopping` reads it off); the loss on
    ``test`` is measured with those weights and with the last ones, so ``test_loss`` is filled at
    those two epochs only, and says whether stopping was also better on messages it never saw
    (measuring it every epoch would cost more than the training). ``epochs``: default
    the profile's ``task_overtrain_epochs``; ``base``: a ``(model, tokenizer)`` for tests. The
    curve is saved (:func:`~ragft_helpers.score_cache.reused`): a re-run reloads it, trains nothing."""
    labels = list(labels)
    epochs = epochs or settings.profile.task_overtrain_epochs
    if base is not None:
        return _overtraining_curve(train, validation, test, settings, epochs, weight_decay, labels, base)
    source = _base(CLASSIFIERS["minilm"], settings)
    return score_cache.reused(
        "overtraining-curve", settings,
        lambda: _overtraining_curve(train, validation, test, settings, epochs, weight_decay, labels),
        train=list(train), validation=list(validation), test=list(test), epochs=epochs,
        weight_decay=weight_decay, labels=labels,
        base=[source.name, portable_location(str(source.location), settings)])


def _overtraining_curve(train, validation, test, settings, epochs, weight_decay, labels, base=None):
    import pandas as pd
    from transformers import DataCollatorWithPadding, Trainer

    p = settings.profile
    set_seed(settings.seed)
    model, tokenizer = base or _load_base(CLASSIFIERS["minilm"], labels, settings)
    tokenizer = ensure_pad_token(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    encoded = {name: encode_messages(tickets, labels, tokenizer, p.task_max_length)
               for name, tickets in (("train", train), ("validation", validation), ("test", test))}
    best = best_weights_callback("eval_validation_loss")
    with tempfile.TemporaryDirectory(prefix="task-overtraining-") as output_dir:
        args = training_arguments(settings, output_dir, max_steps=-1, num_train_epochs=epochs,
                                  learning_rate=p.task_learning_rate, lr_scheduler_type="constant",
                                  warmup_steps=0, per_device_train_batch_size=p.task_batch_size,
                                  per_device_eval_batch_size=p.task_batch_size,
                                  gradient_accumulation_steps=1, eval_strategy="epoch",
                                  eval_on_start=False, logging_strategy="epoch", logging_first_step=False,
                                  save_strategy="no",
                                  # torch's fused AdamW: the same updates in one kernel per
                                  # step, 16% less time for this curve at smoke (loss within 0.003)
                                  optim=ENCODER_OPTIMIZER, weight_decay=weight_decay)
        trainer = Trainer(model=model, args=args, train_dataset=encoded["train"],
                          eval_dataset={"validation": encoded["validation"]},
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                          callbacks=[best])
        measured_train(trainer)
        rows: dict[int, dict] = {}
        for entry in trainer.state.log_history:
            epoch = int(round(entry.get("epoch", 0)))
            row = rows.setdefault(epoch, {"epoch": epoch})
            for key, column in (("loss", "train_loss"), ("eval_validation_loss", "validation_loss")):
                if key in entry:
                    row[column] = entry[key]
        last = max(rows)
        rows[last]["test_loss"] = trainer.evaluate(encoded["test"], metric_key_prefix="test")["test_loss"]
        model.load_state_dict(best.weights)
        rows[best.epoch]["test_loss"] = trainer.evaluate(encoded["test"], metric_key_prefix="test")["test_loss"]
    columns = ["epoch", "train_loss", "validation_loss", "test_loss"]
    return pd.DataFrame([rows[e] for e in sorted(rows) if e > 0],
                        columns=columns).dropna(subset=["train_loss", "validation_loss"])


def early_stopping(curve) -> dict[str, float]:
    """What :func:`overtraining_curve` shows: the epoch of lowest validation loss (where early
    stopping stops), the validation and test losses there and after the last epoch, and the
    training loss at both."""
    best = curve.loc[curve["validation_loss"].idxmin()]
    last = curve.iloc[-1]
    return {"best_epoch": int(best["epoch"]), "last_epoch": int(last["epoch"]),
            "validation_best": float(best["validation_loss"]), "validation_last": float(last["validation_loss"]),
            "test_best": float(best["test_loss"]), "test_last": float(last["test_loss"]),
            "train_best": float(best["train_loss"]), "train_last": float(last["train_loss"])}


def ensure_classifier(kind_name: str, train: Sequence[Ticket], settings: Settings | None = None, *,
                      labels: Sequence[str] = ORIGINAL_LABELS, retrain: bool = False) -> ClassifierRun:
    """Train and save the classifier unless it is saved with these settings and messages; its
    :class:`ClassifierRun`, measured now or read from its folder."""
    settings = settings or get_settings()
    folder = classifier_dir(kind_name, train, labels, settings)
    saved = folder / RUN_FILE
    if saved.is_file() and not retrain:
        return ClassifierRun(**json.loads(saved.read_text(encoding="utf-8")))
    model, tokenizer, run = train_classifier(kind_name, train, labels, settings)
    target = save_checkpoint(model, tokenizer, folder)
    (target / RUN_FILE).write_text(json.dumps(asdict(run), indent=2), encoding="utf-8")
    write_settings(target, classifier_spec(kind_name, train, labels, settings))
    del model
    release_freed_memory()  # the trained copy and its optimiser: load_classifier brings it back
    return run


def load_classifier(kind_name: str, train: Sequence[Ticket], settings: Settings | None = None, *,
                    labels: Sequence[str] = ORIGINAL_LABELS, name: str | None = None) -> FineTuned:
    """A saved classifier as a :class:`FineTuned` system; nothing is trained. A classifier not
    trained with these settings raises :class:`AssetError` naming what trains it."""
    settings = settings or get_settings()
    kind = _kind(kind_name)
    folder = classifier_dir(kind_name, train, labels, settings)
    if not (folder / RUN_FILE).is_file():
        raise AssetError(f"No fine-tuned {kind_name!r} classifier for profile "
                         f"{settings.profile.name} in {folder}. {how_to_train(kind_name)} (with the "
                         "same RAGFT_CACHE_DIR, RAGFT_PROFILE and RAGFT_SEED).")
    if kind.lora:
        from peft import PeftModel

        base, tokenizer = _load_base(kind, labels, settings)
        with peft_deprecation_hidden():
            model = PeftModel.from_pretrained(base, folder)
    else:
        model, tokenizer = _load_base(kind, labels, settings, folder)
    model.eval()
    return FineTuned(model, tokenizer, list(labels), settings.profile.task_max_length,
                     name or f"fine-tuned {kind_name}")


# ---- scoring -------------------------------------------------------------------------------------

def evaluate(system, tickets: Sequence[Ticket], *, progress: bool = True,
             settings: Settings | None = None, reuse: bool = True):
    """Classify every message one at a time: one row each with the prediction and the latency.

    With ``settings`` and ``reuse``, a result saved by an earlier call with the same system (its
    weights, index and parameters), messages and settings is reloaded, latencies included
    (:mod:`score_cache`). Otherwise only the messages this system has not classified yet, in any
    earlier call on any messages, are classified now (the learning curve's largest size and the
    new-intent step reuse the main table's rows): a reused row keeps the latency measured then."""
    import pandas as pd
    from tqdm.auto import tqdm

    saved = kept_path = None
    kept: dict[str, dict] = {}
    if settings is not None and reuse:
        fingerprint = score_cache.system_fingerprint(system, settings)
        saved = score_cache.path_of(system, tickets, settings, fingerprint=fingerprint)
        earlier = score_cache.load(saved)
        if earlier is not None:
            return earlier
        kept_path = score_cache.rows_path(fingerprint, settings)
        kept = score_cache.load(kept_path) or {}
    rows, added = [], 0
    for ticket in tqdm(tickets, desc=system.name, disable=not progress, leave=False):
        key = score_cache.item_key(ticket)
        if key not in kept:
            start = time.perf_counter()
            prediction = system.predict(ticket.text)
            kept[key] = {"predicted": prediction.label, "seconds": time.perf_counter() - start}
            added += 1
        rows.append({"system": system.name, "id": ticket.id, "label": ticket.label,
                     "predicted": kept[key]["predicted"], "correct": kept[key]["predicted"] == ticket.label,
                     "seconds": kept[key]["seconds"]})
    frame = pd.DataFrame(rows, columns=["system", "id", "label", "predicted", "correct", "seconds"])
    if saved is not None:
        if added:
            score_cache.save(kept_path, kept)
        score_cache.save(saved, frame)
    return frame


def macro_f1(true: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """The mean over ``labels`` (default: every true label) of each label's F1 (0 when undefined)."""
    labels = sorted(set(true)) if labels is None else list(labels)
    if not labels:
        return float("nan")
    scores = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(true, predicted))
        fp = sum(t != label and p == label for t, p in zip(true, predicted))
        fn = sum(t == label and p != label for t, p in zip(true, predicted))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def bootstrap_macro_f1(true: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None,
                       n: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """(macro-F1, low, high): its percentile bootstrap interval over messages (resampled with
    replacement, ``n`` times)."""
    import numpy as np

    true, predicted = list(true), list(predicted)
    if not true:
        return (float("nan"),) * 3
    labels = sorted(set(true)) if labels is None else list(labels)
    rng = np.random.default_rng(seed)
    samples = [macro_f1([true[i] for i in draw], [predicted[i] for i in draw], labels)
               for draw in rng.integers(0, len(true), size=(n, len(true)))]
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return macro_f1(true, predicted, labels), float(low), float(high)


def summarise(rows, labels: Sequence[str] | None = None, seed: int = 0) -> dict[str, float]:
    """Accuracy and macro-F1 with 95% bootstrap intervals, and latency per message, of one system."""
    accuracy, acc_low, acc_high = bootstrap_ci(rows["correct"].astype(float), seed=seed)
    f1, f1_low, f1_high = bootstrap_macro_f1(rows["label"], rows["predicted"], labels, seed=seed)
    latency = percentiles(rows["seconds"] * 1000, (50, 95))
    return {"system": rows["system"].iloc[0] if len(rows) else "", "n": len(rows),
            "accuracy": accuracy, "accuracy_low": acc_low, "accuracy_high": acc_high,
            "macro_f1": f1, "macro_f1_low": f1_low, "macro_f1_high": f1_high,
            "ms_per_message": float(rows["seconds"].mean() * 1000) if len(rows) else math.nan,
            "ms_p50": latency["p50"], "ms_p95": latency["p95"]}


def results_table(results: Sequence, labels: Sequence[str] | None = None, seed: int = 0):
    """One row per system (a list of :func:`evaluate` frames): :func:`summarise` of each."""
    import pandas as pd

    return pd.DataFrame([summarise(rows, labels, seed) for rows in results]).set_index("system")


def confusion_matrix(rows, labels: Sequence[str]):
    """Counts of true label (rows) × predicted label (columns), every label in both."""
    import pandas as pd

    return pd.crosstab(pd.Categorical(rows["label"], categories=list(labels)),
                       pd.Categorical(rows["predicted"], categories=list(labels)),
                       rownames=["true"], colnames=["predicted"], dropna=False)


def recall(rows, label: str) -> float:
    """Share of the messages labelled ``label`` that were predicted ``label`` (NaN without any)."""
    mine = rows[rows["label"] == label]
    return float((mine["predicted"] == label).mean()) if len(mine) else math.nan


def recall_interval(rows, label: str, seed: int = 0) -> tuple[float, float, float]:
    """:func:`recall` with its 95% bootstrap interval over the messages labelled ``label``."""
    mine = rows[rows["label"] == label]
    return bootstrap_ci((mine["predicted"] == label).astype(float), seed=seed)


def separated(table, better: str, worse: str, metric: str = "macro_f1") -> bool:
    """``better``'s interval lies entirely above ``worse``'s (the intervals do not overlap)."""
    return bool(table.loc[better, f"{metric}_low"] > table.loc[worse, f"{metric}_high"])


# ---- the learning curve --------------------------------------------------------------------------

def learning_curve(tickets: Sequence[Ticket], lm, collection, settings: Settings, *,
                   sizes: Sequence[int | None] | None = None, test: Sequence[Ticket] | None = None,
                   progress: bool = True):
    """Macro-F1 against labelled examples per label for few-shot, kNN and the fine-tuned MiniLM.

    ``sizes``: the profile's ``task_curve_sizes`` (None = every training message the profile
    uses). The test messages default to ``task_curve_test_per_label`` of each label. Classifiers
    of each size are trained once and saved (keyed by their messages), so a re-run reloads them.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    p = settings.profile
    sizes = p.task_curve_sizes if sizes is None else sizes
    if test is None:
        test = test_set(tickets, settings, per_label=p.task_curve_test_per_label)
    full = len(training_set(tickets, settings, labels=ORIGINAL_LABELS[:1]))
    # When the index holds exactly the profile's training messages, the largest size is the main
    # table's few-shot and kNN (no per-label limit), and their rows are reused (:func:`evaluate`).
    indexed = set(collection.get(where=label_condition(ORIGINAL_LABELS), include=[])["ids"])
    just_these = indexed == {t.id for t in training_set(tickets, settings)}
    rows = []
    for size in tqdm(sizes, desc="training-set sizes", disable=not progress):
        n = full if size is None else min(size, full)
        train = training_set(tickets, settings, per_label=n)
        run = ensure_classifier("minilm", train, settings)
        limit = None if n == full and just_these else n
        systems = [FewShot(lm.model, lm.tokenizer, collection=collection, k=p.task_shots, per_label=limit,
                           max_tokens=p.task_max_length),
                   KNN(collection, k=p.task_knn_k, per_label=limit),
                   load_classifier("minilm", train, settings)]
        for system in systems:
            result = evaluate(system, test, progress=False, settings=settings)
            f1, low, high = bootstrap_macro_f1(result["label"], result["predicted"], ORIGINAL_LABELS)
            rows.append({"per_label": n, "system": system.name.split()[0], "macro_f1": f1, "low": low,
                         "high": high, "accuracy": float(result["correct"].mean()),
                         "train_seconds": run.train_seconds if isinstance(system, FineTuned) else 0.0})
    return pd.DataFrame(rows)


def crossover(curve, challenger: str = "fine-tuned",
              incumbents: Sequence[str] = ("few-shot", "kNN")) -> dict[str, Any]:
    """Where ``challenger`` overtakes the best of ``incumbents`` on the learning curve.

    ``status`` is "crossed" (behind at the smallest size, ahead from ``per_label`` on),
    "always ahead", "never" (never ahead at the largest size) or "mixed"; ``per_label`` is the
    first size from which the challenger stays ahead.
    """
    table = curve.pivot(index="per_label", columns="system", values="macro_f1").sort_index()
    best_other = table[list(incumbents)].max(axis=1)
    ahead = (table[challenger] > best_other).tolist()
    sizes = table.index.tolist()
    first = next((i for i in range(len(ahead)) if all(ahead[i:])), None)
    if first is None:
        return {"status": "never", "per_label": None, "margin": float((table[challenger] - best_other).iloc[-1])}
    status = "always ahead" if first == 0 else ("crossed" if not any(ahead[:first]) else "mixed")
    return {"status": status, "per_label": int(sizes[first]), "below": int(sizes[first - 1]) if first else None,
            "margin": float((table[challenger] - best_other).iloc[-1])}


# ---- the command line ----------------------------------------------------------------------------

def load_method(method: str, settings: Settings | None = None, *, classifier: str = "minilm"):
    """The system ``ragft classify --method`` uses, from saved models only (nothing is trained).

    zero-shot and few-shot load the language model; few-shot and knn need the labelled messages
    in the index (notebook 07 builds it; :func:`index_tickets` adds them).
    """
    from ragft_helpers.store import MissingIndexError

    settings = settings or get_settings()
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; use one of: {', '.join(METHODS)}.")
    p = settings.profile
    if method == "finetuned":
        train = training_set(load_tickets(), settings)
        return load_classifier(classifier, train, settings)
    if method in ("few-shot", "knn"):
        collection = open_tickets(settings)
        expected = {t.id for t in training_set(load_tickets(), settings)}
        present = set(collection.get(ids=sorted(expected), include=[])["ids"])
        if present != expected:
            raise MissingIndexError(
                f"The index '{COLLECTION}' holds {len(present)} of the {len(expected)} labelled "
                f"training messages of profile {p.name}: run notebook 07, or "
                "tasks.index_tickets(tasks.open_tickets(settings), "
                "tasks.training_set(tasks.load_tickets(), settings)), to index them.")
        if method == "knn":
            return KNN(collection, k=p.task_knn_k)
    lm = load_causal_lm(settings, verbose=False)
    if method == "zero-shot":
        return ZeroShot(lm.model, lm.tokenizer, max_tokens=p.task_max_length)
    return FewShot(lm.model, lm.tokenizer, collection=collection, k=p.task_shots, max_tokens=p.task_max_length)
