"""Can a trained cross-encoder tell when the retrieved chunks state the answer? (notebook 06's abstention)

The RAFT readers do not abstain on unanswerable questions, and the retriever's similarity does not
separate them either (benchmarks/README.md, "Why the readers do not abstain"): an unanswerable
question asks about the right section for a fact it does not hold. This trains the one other
model the workbook has offline, MiniLM, as a cross-encoder that reads a question and a chunk
together (``AutoModelForSequenceClassification``, a pair input) and says whether the chunk states
the answer, then uses it as a gate: abstain when no retrieved chunk is judged to answer.

Training pairs come from the **train articles** only (``raft.split_questions``), every phrasing
(the question and its variants), retrieved from the train articles' index:

- answerable question + the chunk of its source section that holds the answer: 1;
- the same question + that chunk with its answer sentences taken out: 0 (on topic, no answer);
- the same question + the best retrieved chunk of another section: 0;
- an unanswerable question + each of its ``rag_k`` retrieved chunks: 0.

The gate's score for a question is the highest probability over its ``rag_k`` retrieved chunks.
Reported for the train and the **test articles** (retrieved from the whole knowledge base, as
notebook 06 scores them): the AUC of answerable against unanswerable phrasings (also counting
only the answerable phrasings whose retrieved chunks hold the answer), and abstention / false
abstention at the classifier's own boundary (0.5) and at the threshold chosen on the train
articles for at most 15% false abstention. The best chunk's cosine similarity is the baseline.

    python benchmarks/bench_answerability.py [--profile laptop] [--seeds 42]

Writes benchmarks/results/answerability-<profile>.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import qa, raft, store
from ragft_helpers.assets import embedding_candidates
from ragft_helpers.config import KNOWLEDGE_DIR, get_settings, set_seed
from ragft_helpers.retrieval import retrieve
from ragft_helpers.retrieval_metrics import is_relevant
from ragft_helpers.scoring import contains_answer
from ragft_helpers.training import training_arguments

RESULTS = Path(__file__).resolve().parent / "results"
COMMAND = "python benchmarks/bench_answerability.py"
MAX_LENGTH = 256  # tokens of question + chunk
EPOCHS = 3
LEARNING_RATE = 5e-5
FALSE_ABSTENTION = 0.15  # the target's ceiling, used to choose the threshold on the train articles


def without_answer(chunk, question) -> str:
    """The chunk's text with every sentence that states ``question``'s answer taken out."""
    kept = [sentence for sentence in raft.chunk_sentences(chunk) if not contains_answer(sentence, question)]
    return chunk.metadata.get("heading_path", "") + "\n" + " ".join(kept)


def phrasings(question) -> tuple[str, ...]:
    return (question.question, *question.variants)


def training_pairs(questions, collection, settings) -> list[tuple[str, str, int]]:
    k = settings.profile.rag_k
    pairs = []
    for question in questions:
        for text in phrasings(question):
            found = retrieve(text, k + 2, collection, settings=settings)
            if not question.answerable:
                pairs += [(text, chunk.text, 0) for chunk in found[:k]]
                continue
            relevant = ([c for c in found if is_relevant(c.metadata, question)]
                        or raft.oracle_chunks(question, collection))
            holding = [c for c in relevant if raft.answer_sentence(question, [c])]
            if holding:
                pairs.append((text, holding[0].text, 1))
                redacted = without_answer(holding[0], question)
                if not contains_answer(redacted, question):
                    pairs.append((text, redacted, 0))
            pairs += [(text, c.text, 0) for c in found if not is_relevant(c.metadata, question)][:1]
    return pairs


def train_gate(pairs, settings, seed: int):
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer)

    set_seed(seed)
    location = embedding_candidates()[0][0].location
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=2)
    data = Dataset.from_dict({"question": [p[0] for p in pairs], "chunk": [p[1] for p in pairs],
                              "label": [p[2] for p in pairs]}).shuffle(seed=seed)
    data = data.map(lambda b: tokenizer(b["question"], b["chunk"], truncation="only_second",
                                        max_length=MAX_LENGTH), batched=True, remove_columns=["question", "chunk"])
    with tempfile.TemporaryDirectory(prefix="ragft-gate-") as output_dir:
        args = training_arguments(settings, output_dir, max_steps=-1, num_train_epochs=EPOCHS,
                                  learning_rate=LEARNING_RATE, per_device_train_batch_size=16,
                                  gradient_accumulation_steps=1, save_strategy="no", eval_strategy="no",
                                  eval_on_start=False, logging_steps=20, optim="adamw_torch", weight_decay=0.01)
        start = time.perf_counter()
        Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer)).train()
        seconds = time.perf_counter() - start
    model.eval()
    return model, tokenizer, seconds


def gate_rows(questions, collection, model, tokenizer, settings) -> list[dict]:
    """One row per phrasing: answerable, whether its chunks hold the answer, the gate's score and
    the best chunk's similarity."""
    import torch

    rows = []
    for question in questions:
        for text in phrasings(question):
            found = retrieve(text, settings.profile.rag_k, collection, settings=settings)
            encoded = tokenizer([text] * len(found), [c.text for c in found], truncation="only_second",
                                max_length=MAX_LENGTH, padding=True, return_tensors="pt")
            with torch.inference_mode():
                gate = model(**encoded).logits.float().softmax(-1)[:, 1].max().item()
            rows.append({"answerable": question.answerable,
                         "holds": question.answerable and raft.answer_sentence(question, found) is not None,
                         "gate": gate, "similarity": found[0].score})
    return rows


def auc(positive, negative) -> float:
    pairs = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
    return sum(pairs) / len(pairs) if pairs else float("nan")


def rates(rows, score: str, threshold: float) -> tuple[float, float]:
    """(abstention on unanswerable, false abstention on answerable) when abstaining below ``threshold``."""
    unanswerable = [r[score] < threshold for r in rows if not r["answerable"]]
    answerable = [r[score] < threshold for r in rows if r["answerable"]]
    return sum(unanswerable) / len(unanswerable), sum(answerable) / len(answerable)


def threshold_for(rows, score: str, ceiling: float = FALSE_ABSTENTION) -> float:
    """The highest threshold whose false abstention on ``rows`` is at most ``ceiling``."""
    candidates = sorted({r[score] for r in rows})  # below the lowest, nothing abstains
    return max(t for t in candidates if rates(rows, score, t)[1] <= ceiling)


def summary(rows, score: str, thresholds: dict[str, float]) -> dict:
    answerable = [r[score] for r in rows if r["answerable"]]
    holding = [r[score] for r in rows if r["holds"]]
    unanswerable = [r[score] for r in rows if not r["answerable"]]
    out = {"answerable": len(answerable), "unanswerable": len(unanswerable),
           "auc": auc(answerable, unanswerable), "auc_holding": auc(holding, unanswerable)}
    for name, threshold in thresholds.items():
        out[name] = (threshold, *rates(rows, score, threshold))
    return out


def measure(profile: str, seed: int) -> list[dict]:
    settings = get_settings({**os.environ, "RAGFT_PROFILE": profile, "RAGFT_SEED": str(seed)})
    train_questions, test_questions = raft.split_questions(qa.load_questions())
    train_index = raft.train_collection(settings)
    whole = store.open_collection(settings)
    store.index_folder(KNOWLEDGE_DIR, whole, progress=False)
    pairs = training_pairs(train_questions, train_index, settings)
    model, tokenizer, seconds = train_gate(pairs, settings, seed)
    train_rows = gate_rows(train_questions, train_index, model, tokenizer, settings)
    test_rows = gate_rows(test_questions, whole, model, tokenizer, settings)
    out = []
    for score in ("gate", "similarity"):
        chosen = threshold_for(train_rows, score)
        thresholds = {"chosen": chosen, **({"boundary": 0.5} if score == "gate" else {})}
        for articles, rows in (("train", train_rows), ("test", test_rows)):
            out.append({"profile": profile, "seed": seed, "score": score, "articles": articles,
                        "pairs": len(pairs), "positive": sum(p[2] for p in pairs),
                        "train_seconds": seconds, **summary(rows, score, thresholds)})
    return out


def report(rows: list[dict]) -> str:
    lines = ["# An answerability gate: a MiniLM cross-encoder trained on the train articles", "",
             f"`{COMMAND}` — {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}. "
             f"{rows[0]['pairs']} training pairs ({rows[0]['positive']} that state the answer), "
             f"{EPOCHS} epochs, trained in {rows[0]['train_seconds']:.0f} s (the first seed).", "",
             "| profile | seed | score | articles | answerable / unanswerable phrasings | AUC | AUC, answer in the chunks "
             "| threshold chosen on train (≤ 15% false abstention): abstention / false abstention "
             "| at 0.5: abstention / false abstention |",
             "| --- | ---: | --- | --- | --- | ---: | ---: | --- | --- |"]
    for r in rows:
        chosen = r["chosen"]
        boundary = r.get("boundary")
        lines.append(f"| {r['profile']} | {r['seed']} | {r['score']} | {r['articles']} | {r['answerable']} / "
                     f"{r['unanswerable']} | {r['auc']:.2f} | {r['auc_holding']:.2f} | {chosen[0]:.3f}: "
                     f"{chosen[1]:.2f} / {chosen[2]:.2f} | "
                     + (f"{boundary[1]:.2f} / {boundary[2]:.2f} |" if boundary else "— |"))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="laptop")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    args = parser.parse_args()
    rows = [row for seed in args.seeds for row in measure(args.profile, seed)]
    text = report(rows)
    print(text)
    (RESULTS / f"answerability-{args.profile}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
