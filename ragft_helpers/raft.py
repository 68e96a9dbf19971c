"""Retrieval-augmented fine-tuning (RAFT, Zhang et al. 2024): teach the model to *read*.

A training example is a question, the ``k`` chunks the real retriever returns for it, and a target
of one short sentence. For most examples the oracle chunk (the one that answers the question) is
forced into the context and the target is its sentence that states the answer; for a share
``raft_abstain_share`` the oracle is removed and the target is the abstention. The loss covers the
target tokens only (prompt labels are -100).

The knowledge base is split by article (``data/qa/raft_split.json``). Training retrieves from an
index of the train articles only and uses only questions whose sources are train articles; every
number is measured on questions about the test articles. A gain can then only come from reading
skill, not from remembered facts.
"""
from __future__ import annotations

import json
import random
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from ragft_helpers import score_cache
from ragft_helpers.assets import (AssetError, ResolvedModel, causal_lm_candidates, load_causal_lm,
                                  save_checkpoint)
from ragft_helpers.checkpoints import keyed_dir, load_saved, portable_location, text_fingerprint, write_settings
from ragft_helpers.config import DATA_DIR, KNOWLEDGE_DIR, QUESTIONS_FILE, Settings, get_settings, set_seed
from ragft_helpers.corpus import chunk_documents, load_documents
from ragft_helpers.injection import wrap_lora
from ragft_helpers.lm import ensure_pad_token
from ragft_helpers.machine import release_freed_memory
from ragft_helpers.qa import Question
from ragft_helpers.rag import ABSTAIN_TEXT, build_prompt, has_chat_template
from ragft_helpers.retrieval import DEFAULT_METHOD, RetrievedChunk, retrieve
from ragft_helpers.retrieval_metrics import is_relevant
from ragft_helpers.scoring import contains_answer, normalise
from ragft_helpers.store import build_index, open_collection
from ragft_helpers.training import (TargetsOnlyCollator, measured_train, targets_only_loss,
                                    training_arguments, training_spec)

SPLIT_FILE = DATA_DIR / "qa" / "raft_split.json"
TRAIN_COLLECTION = "raft-train"  # the train articles only
RUN_FILE = "raft_run.json"
READERS = ("raft-full", "raft-lora")
# The LoRA reader's optimiser at every profile. A profile's memory-saving optimiser (Adafactor,
# without momentum) is for full fine-tuning; an adapter's AdamW state is a few megabytes
# (benchmarks/README.md, "The LoRA reader's optimiser").
ADAPTER_OPTIMIZER = "adamw_torch"
# The full reader's optimiser at every profile: AdamW's two moments of every weight would add
# 1.1 GB to its training (benchmarks/README.md, "Notebook 06 under 4 GB").
FULL_READER_OPTIMIZER = "adafactor"
# Training batches are padded to a multiple of this many tokens (part of a reader's cache key).
# Unpadded, prompts of about 200 to 560 tokens gave nearly every micro-batch a shape of its own,
# and the memory kept per shape grew the full reader's process from 2.3 to 6.0 GB in 24 laptop
# steps; padded, 2.6 GB in the same time (benchmarks/README.md, "Notebook 06 under 4 GB").
PAD_MULTIPLE = 64
CHAT_READER = "raft-lora"  # what the chatbot and `ragft ask --reader raft` use (benchmarks/bench_raft.py)
_CITATION = re.compile(r"^\[\d+\]: ")  # the source number that opens an answering target
# How examples are laid out (part of a reader's cache key: a change retrains): the oracle keeps
# the place retrieval gave it, an answering target opens with "[n]: ", and an abstention context
# holds no chunk that states the answer.
EXAMPLE_LAYOUT = "oracle at its retrieval rank; target '[n]: sentence'; abstention contexts without the answer"
# Chunks retrieved per phrasing beyond rag_k: distractors to fill a context whose oracle is left
# out, and whose chunks that state the answer elsewhere are left out too.
SPARE_CHUNKS = 4
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+(?=\s|$)|$)")


def how_to_create(name: str) -> str:
    return ("Train it first: run notebook 06 (notebooks/06_teach_the_model_to_read.ipynb), or "
            f"raft.ensure_reader(settings, {name!r}, qa.load_questions()); either saves the reader there")


# ---- the split -------------------------------------------------------------------------------------

def test_articles(path: Path = SPLIT_FILE) -> frozenset[str]:
    """The knowledge-base articles held out from RAFT training."""
    return frozenset(json.loads(Path(path).read_text(encoding="utf-8"))["test_articles"])


def article_split(question: Question, held_out: frozenset[str]) -> str | None:
    """"train" when every source of ``question`` is a train article, "test" when every one is
    held out, ``None`` for questions across both and for "updated" questions (the notices are
    another chapter)."""
    if question.type == "updated":
        return None
    articles = {article for article, _ in question.sources}
    if articles <= held_out:
        return "test"
    return "train" if not articles & held_out else None


def split_questions(questions: Sequence[Question],
                    held_out: frozenset[str] | None = None) -> tuple[list[Question], list[Question]]:
    """(train questions, test questions) by :func:`article_split`."""
    held_out = test_articles() if held_out is None else held_out
    sides = [article_split(q, held_out) for q in questions]
    return ([q for q, side in zip(questions, sides) if side == "train"],
            [q for q, side in zip(questions, sides) if side == "test"])


def train_collection(settings: Settings | None = None, *, client=None, progress: bool = False):
    """The index of the train articles alone (built once, incremental like every index)."""
    settings = settings or get_settings()
    held_out = test_articles()
    documents = [d for d in load_documents(KNOWLEDGE_DIR) if d.source not in held_out]
    collection = open_collection(settings, TRAIN_COLLECTION, client)
    build_index(chunk_documents(documents), collection, progress=progress, settings=settings)
    return collection


# ---- examples ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RaftExample:
    question_id: str
    question: str  # as asked: the canonical wording or a variant
    sources: tuple[str, ...]  # the context's chunk labels, in prompt order
    oracle: bool  # the chunk that answers the question is in the context
    oracle_label: str  # that chunk's label ("" when the oracle was removed)
    target: str  # one sentence: the answer, or the abstention
    prompt: str


def chunk_sentences(chunk: RetrievedChunk) -> list[str]:
    """The sentences of ``chunk``'s body (its heading path left out), whitespace collapsed."""
    return [" ".join(match.group(0).split()) for match in _SENTENCE.finditer(chunk.body)]


def answer_sentence(question: Question, chunks: Sequence[RetrievedChunk]) -> str | None:
    """The first sentence of ``chunks`` that contains ``question``'s answer (or an alias)."""
    for chunk in chunks:
        for sentence in chunk_sentences(chunk):
            if contains_answer(sentence, question):
                return sentence
    return None


def target_sentence(question: Question, oracle: Sequence[RetrievedChunk]) -> str:
    """What RAFT teaches the model to say: the oracle's sentence that states the answer, else a
    paraphrase that contains it, else the answer itself."""
    found = answer_sentence(question, oracle)
    if found:
        return found
    stated = [p for p in question.paraphrases if contains_answer(p, question)]
    return min(stated, key=len) if stated else f"{question.answer}."


def cited(number: int, sentence: str) -> str:
    """``sentence`` opened by the number of the source it comes from, as in "[2]: The card costs
    four pounds." Every answering target then starts the same way, so the first word the reader
    chooses is "answer from a source" or the abstention: with free-form first words, greedy
    decoding would prefer the one constant reply (the abstention) far too often. The colon keeps
    the reader from continuing the way the context block does after a number ("[2] (source >
    heading)")."""
    return f"[{number}]: {sentence}"


def oracle_chunks(question: Question, collection) -> list[RetrievedChunk]:
    """The chunks of ``collection`` from ``question``'s source sections."""
    found = []
    for article in sorted({article for article, _ in question.sources}):
        stored = collection.get(where={"source": article}, include=["documents", "metadatas"])
        found += [RetrievedChunk(id_, text, metadata, 0.0) for id_, text, metadata
                  in zip(stored["ids"], stored["documents"], stored["metadatas"])
                  if is_relevant(metadata, question)]
    return found


def oracle_in_context(oracle: RetrievedChunk, retrieved: Sequence[RetrievedChunk],
                      distractors: Sequence[RetrievedChunk], k: int, rng: random.Random) -> list[RetrievedChunk]:
    """A context of ``k`` chunks that holds ``oracle`` where retrieval put it: the top ``k`` as
    retrieved when the oracle is among them (other chunks of its section included), else ``k - 1``
    distractors with the oracle at a random place. The reader then sees the oracle first about as
    often as it will at question time, and learns to look past the first place when it is not."""
    ids = [chunk.id for chunk in retrieved[:k]]
    if oracle.id in ids:
        return list(retrieved[:k])
    context = list(distractors[:k - 1])
    context.insert(rng.randrange(len(context) + 1), oracle)
    return context


def build_examples(questions: Sequence[Question], collection, tokenizer, settings: Settings, *,
                   seed: int | None = None,
                   held_out_questions: Sequence[Question] = ()) -> list[RaftExample]:
    """RAFT examples for ``questions`` (each phrasing: the question, then up to
    ``raft_phrasings - 1`` variants), contexts from the real retriever over ``collection``.

    An answerable question's oracle is removed with probability ``raft_abstain_share``, and with
    it every other chunk that states the answer (the knowledge base repeats facts across articles:
    about a third of such contexts still held the answer), so that "I don't know" is the target
    only where the context does not say it. The abstention examples (those, and every
    unanswerable question's) are then sampled down so that they are at most that share of all
    examples: a constant target that is too frequent is what a small model learns first, and it
    would answer "I don't know" to everything. Examples whose target holds a
    ``held_out_questions`` question, variant or answer are left out before that cap, so the share
    holds in what is trained on.
    """
    profile = settings.profile
    rng = random.Random(f"{settings.seed if seed is None else seed}:raft")
    k = profile.rag_k
    answering, abstaining = [], []
    for question in questions:
        for text in (question.question, *question.variants)[:profile.raft_phrasings]:
            retrieved = retrieve(text, k + SPARE_CHUNKS, collection, settings=settings)
            relevant = [c for c in retrieved if is_relevant(c.metadata, question)]
            distractors = [c for c in retrieved if not is_relevant(c.metadata, question)]
            gold: list[RetrievedChunk] = []
            if not question.answerable:
                context, target = retrieved[:k], ABSTAIN_TEXT
            elif rng.random() < profile.raft_abstain_share:
                context = [c for c in distractors if not contains_answer(c.text, question)][:k]
                if not context:
                    continue
                target = ABSTAIN_TEXT
            else:
                gold = (relevant or oracle_chunks(question, collection))[:1]
                if not gold:
                    continue
                context = oracle_in_context(gold[0], retrieved, distractors, k, rng)
                target = cited(context.index(gold[0]) + 1, target_sentence(question, gold))
            example = RaftExample(question.id, text, tuple(c.label for c in context), bool(gold),
                                  gold[0].label if gold else "", target,
                                  build_prompt(text, context, tokenizer))
            if held_out_questions and leaks([example], held_out_questions):
                continue
            (answering if example.oracle else abstaining).append(example)
    share = profile.raft_abstain_share
    limit = int(len(answering) * share / (1 - share)) if share < 1 else len(abstaining)
    kept = set(rng.sample(range(len(abstaining)), min(limit, len(abstaining))))
    return answering + [e for n, e in enumerate(abstaining) if n in kept]


def leaks(examples: Sequence[RaftExample], held_out_questions: Sequence[Question]) -> list[str]:
    """Held-out question texts, variants or answers that occur (normalised, whole words) in a
    training target (after its source number): each one a leak."""
    targets = [f" {normalise(_CITATION.sub('', e.target))} " for e in examples]
    found = []
    for question in held_out_questions:
        strings = [question.question, *question.variants, *(
            [question.answer, *question.aliases] if question.answerable else [])]
        for text in strings:
            needle = f" {normalise(text)} "
            if needle.strip() and any(needle in target for target in targets):
                found.append(f"{question.id}: {text!r}")
    return found


def encode(example: RaftExample, tokenizer) -> dict[str, list[int]]:
    """Token ids of prompt + target + end of turn; labels -100 on the prompt, so only the target
    carries loss."""
    prompt = tokenizer(example.prompt, add_special_tokens=not has_chat_template(tokenizer))["input_ids"]
    target = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt + target, "attention_mask": [1] * (len(prompt) + len(target)),
            "labels": [-100] * len(prompt) + target}


def abstention_probability(model, tokenizer, prompt: str) -> float:
    """The probability that ``model``'s answer to ``prompt`` opens with :data:`ABSTAIN_TEXT`'s
    first token: how sure the reader is that its context does not answer. A reader that judges
    the context gives unanswerable questions a higher one than answerable ones; a reader that
    learned only how often to abstain gives both about the same."""
    import torch

    ids = tokenizer(prompt, add_special_tokens=not has_chat_template(tokenizer), return_tensors="pt")
    first = tokenizer(ABSTAIN_TEXT, add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        logits = model(**ids).logits[0, -1]
    return float(logits.float().softmax(-1)[first])


# ---- training ------------------------------------------------------------------------------------

@dataclass
class RaftRun:
    """What training one reader cost and reached."""

    name: str
    lora: bool
    examples: int
    oracle_share: float
    trainable_params: int
    total_params: int
    steps: int
    train_seconds: float
    peak_memory_mb: float
    first_loss: float  # mean of the first eighth of the logged losses (training.TrainingCost)
    final_loss: float  # mean of the last eighth


def data_fingerprint() -> str:
    """A hash of everything the examples are built from: articles, questions and the split."""
    texts = [path.read_text(encoding="utf-8") for path in sorted(KNOWLEDGE_DIR.glob("*.md"))]
    return text_fingerprint([*texts, QUESTIONS_FILE.read_text(encoding="utf-8"),
                             SPLIT_FILE.read_text(encoding="utf-8")])


def reader_spec(name: str, settings: Settings) -> dict[str, Any]:
    """What a reader's weights depend on: budgets, RAFT settings, base model, training data."""
    base = causal_lm_candidates(settings)[0][0]
    profile = settings.profile
    spec = {**training_spec(settings), "reader": name, "raft_max_steps": reader_steps(name, settings),
            "raft_learning_rate": profile.raft_learning_rate, "rag_k": profile.rag_k,
            "raft_abstain_share": profile.raft_abstain_share,
            "raft_phrasings": profile.raft_phrasings, "retrieval": DEFAULT_METHOD,
            "layout": EXAMPLE_LAYOUT, "pad_multiple": PAD_MULTIPLE,
            "model": base.name, "model_source": portable_location(base.location, settings),
            "data": data_fingerprint(), "optimizer": reader_optimizer(name, settings)}
    if name == "raft-lora":
        spec.update(lora_rank=profile.lora_rank,
                    lora_learning_rate_factor=profile.lora_learning_rate_factor)
    return spec


def reader_steps(name: str, settings: Settings) -> int:
    """Optimiser steps of reader ``name``: ``raft_full_max_steps`` for the full reader when the
    profile sets it, else ``raft_max_steps``."""
    profile = settings.profile
    if name == "raft-full" and profile.raft_full_max_steps is not None:
        return profile.raft_full_max_steps
    return profile.raft_max_steps


def reader_optimizer(name: str, settings: Settings) -> str | None:
    """Trainer's ``optim`` for reader ``name``: :data:`FULL_READER_OPTIMIZER` for the full reader;
    for the LoRA reader :data:`ADAPTER_OPTIMIZER` when the profile sets another optimiser, else
    ``None`` (Trainer's AdamW)."""
    if name == "raft-full":
        return FULL_READER_OPTIMIZER
    return ADAPTER_OPTIMIZER if settings.profile.optimizer else None


def reader_dir(name: str, settings: Settings) -> Path:
    """``RAGFT_CACHE_DIR/finetuned/<profile>/<reader>-<key>``, keyed by :func:`reader_spec`."""
    parent = settings.cache_dir / "finetuned" / settings.profile.name
    return keyed_dir(parent, name, reader_spec(name, settings))


def reader_collator(tokenizer, pad_to_multiple_of: int | None = PAD_MULTIPLE) -> TargetsOnlyCollator:
    """Batches of :func:`encode` rows for training: padded on the right to a multiple of
    ``pad_to_multiple_of`` tokens (labels with -100), logits kept at the target positions only."""
    from transformers import DataCollatorForSeq2Seq

    return TargetsOnlyCollator(DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100,
                                                      pad_to_multiple_of=pad_to_multiple_of))


def train_reader(name: str, examples: Sequence[RaftExample], settings: Settings, base=None):
    """Fine-tune a fresh copy of the base model (or ``base``) on ``examples``, loss on the
    targets only; ``raft-lora`` trains a LoRA adapter. Returns (model, tokenizer, RaftRun)."""
    from datasets import Dataset
    from transformers import Trainer

    if name not in READERS:
        raise AssetError(f"Unknown reader {name!r}; use one of {list(READERS)}.")
    if not examples:
        raise ValueError("No RAFT examples to train on: check the split and the question set.")
    set_seed(settings.seed)
    profile = settings.profile
    resolved = base or load_causal_lm(settings)
    model, tokenizer = resolved.model, ensure_pad_token(resolved.tokenizer)
    lora = name == "raft-lora"
    if lora:
        model = wrap_lora(model, profile.lora_rank)
    rows = [encode(e, tokenizer) for e in examples]
    dataset = Dataset.from_dict({key: [row[key] for row in rows] for key in rows[0]})
    learning_rate = profile.raft_learning_rate * (profile.lora_learning_rate_factor if lora else 1)
    optimizer = reader_optimizer(name, settings)  # None: Trainer's AdamW
    steps = reader_steps(name, settings)
    with tempfile.TemporaryDirectory(prefix="raft-run-") as output_dir:
        # Activation checkpointing: each layer's activations are recomputed in the backward pass
        # instead of kept, on prompts of up to ~560 tokens (same losses, 1.1-1.6 GB less memory).
        args = training_arguments(settings, output_dir, max_steps=steps, activation_checkpointing=True,
                                  learning_rate=learning_rate, eval_strategy="no",
                                  eval_on_start=False, save_strategy="no", logging_steps=1,
                                  disable_tqdm=True, **({"optim": optimizer} if optimizer else {}))
        trainer = Trainer(model=model, args=args, train_dataset=dataset,
                          data_collator=reader_collator(tokenizer),
                          compute_loss_func=targets_only_loss, processing_class=tokenizer)
        cost = measured_train(trainer)
    model.eval()
    run = RaftRun(name, lora, len(examples), sum(e.oracle for e in examples) / len(examples),
                  cost.trainable_params, cost.total_params, steps, cost.seconds,
                  cost.peak_memory_mb, cost.first_loss, cost.final_loss)
    return model, tokenizer, run


def training_examples(settings: Settings, tokenizer, questions: Sequence[Question]) -> list[RaftExample]:
    """The RAFT examples of the train questions, leak-free, from the train-article index. Saved
    (:func:`~ragft_helpers.score_cache.reused`, keyed by the questions, the split, the index and the
    tokenizer): a re-run reloads them instead of retrieving for every phrasing again."""
    held_out = test_articles()
    train, test = split_questions(questions, held_out)
    collection = train_collection(settings)
    return score_cache.reused(
        "raft-examples", settings,
        lambda: build_examples(train, collection, tokenizer, settings, held_out_questions=test),
        questions=list(questions), held_out=sorted(held_out), index=collection, tokenizer=tokenizer)


def reader_run(name: str, settings: Settings) -> RaftRun | None:
    """The saved :class:`RaftRun` of a reader with these settings, or ``None``."""
    saved = reader_dir(name, settings) / RUN_FILE
    return RaftRun(**json.loads(saved.read_text(encoding="utf-8"))) if saved.is_file() else None


def ensure_reader(settings: Settings | None, name: str, questions: Sequence[Question], *,
                  retrain: bool = False, examples: Sequence[RaftExample] | None = None) -> RaftRun:
    """Train and save reader ``name`` unless it is saved with these settings; its
    :class:`RaftRun`, measured now or read from its folder. ``examples``: those
    :func:`training_examples` already built for these settings (built here when omitted)."""
    settings = settings or get_settings()
    run = None if retrain else reader_run(name, settings)
    if run is not None:
        return run
    base = load_causal_lm(settings, verbose=False)
    if examples is None:
        examples = training_examples(settings, base.tokenizer, questions)
    model, tokenizer, run = train_reader(name, examples, settings, base=base)
    folder = reader_dir(name, settings)
    save_checkpoint(model, tokenizer, folder)
    (folder / RUN_FILE).write_text(json.dumps(asdict(run), indent=2), encoding="utf-8")
    write_settings(folder, reader_spec(name, settings))
    del model, base
    release_freed_memory()  # the trained copy and its optimiser: load_reader brings it back
    print(f"{name}: {run.steps} steps on {run.examples} examples in {run.train_seconds:.0f} s, "
          f"loss {run.first_loss:.3f} → {run.final_loss:.3f}")
    return run


def load_reader(name: str, settings: Settings | None = None) -> ResolvedModel:
    """A saved reader; a clear error names what trains it when it is missing."""
    settings = settings or get_settings()
    if name not in READERS:
        raise AssetError(f"Unknown reader {name!r}; use one of {list(READERS)}.")
    return load_saved(reader_dir(name, settings), name, settings, how_to_create=how_to_create(name))
