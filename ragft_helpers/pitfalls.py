"""Why the usual "fine-tune GPT-2 on WikiText" snippet fails as written, reproduced live.

The snippet, as it circulates in 2023-era articles::

    tokenizer = GPT2Tokenizer.from_pretrained("gpt2")
    model = GPT2LMHeadModel.from_pretrained("gpt2")
    dataset = load_dataset("wikitext", "wikitext-2-raw-v1")
    tokenized = dataset.map(lambda x: tokenizer(x["text"], padding="max_length", truncation=True),
                            batched=True)
    args = TrainingArguments(output_dir="./results", evaluation_strategy="epoch")
    trainer = Trainer(model=model, args=args, train_dataset=tokenized["train"],
                      eval_dataset=tokenized["validation"])
    trainer.train()

Each function below runs one of its lines against the installed libraries and reports what
happens, so the notebook shows real error messages rather than claims.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass


@dataclass(frozen=True)
class Pitfall:
    snippet: str  # the line of the snippet
    outcome: str  # what it does here: the error raised or the measured cost
    fix: str  # what ragft_helpers does instead
    fails: bool  # True when the line raises an error


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"


def renamed_evaluation_strategy(output_dir) -> Pitfall:
    from transformers import TrainingArguments

    snippet = 'TrainingArguments(..., evaluation_strategy="epoch")'
    fix = 'eval_strategy="steps" (renamed in transformers 4.46, the old name removed in 5)'
    try:
        TrainingArguments(output_dir=str(output_dir), evaluation_strategy="epoch")
    except TypeError as err:
        return Pitfall(snippet, _first_line(err), fix, True)
    return Pitfall(snippet, "accepted by this transformers version", fix, False)


def padding_without_pad_token(tokenizer) -> Pitfall:
    """GPT-2's tokenizer has no pad token; reproduced on a copy of ours with the pad token removed."""
    snippet = 'tokenizer(x["text"], padding="max_length", truncation=True)'
    fix = "ensure_pad_token(): pad with EOS; better, group_texts() so nothing needs padding"
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    try:
        no_pad(["a short line", "a somewhat longer line of text"], padding="max_length",
               truncation=True, max_length=16)
    except ValueError as err:
        return Pitfall(snippet, _first_line(err), fix, True)
    return Pitfall(snippet, "padded without error", fix, False)


def padding_waste(tokenizer, lines: list[str], max_length: int) -> float:
    """Fraction of the tokens in ``padding="max_length"`` batches that are padding."""
    real = sum(min(len(ids), max_length) for ids in tokenizer(lines, add_special_tokens=False)["input_ids"])
    return 1.0 - real / (len(lines) * max_length)


def padded_lines_pitfall(tokenizer, lines: list[str], max_length: int) -> Pitfall:
    waste = padding_waste(tokenizer, lines, max_length)
    blank = sum(not line.strip() for line in lines) / len(lines)
    return Pitfall(
        f'padding="max_length" (max_length={max_length}) on WikiText lines',
        f"{waste:.0%} of the training tokens would be padding; {blank:.0%} of the lines are blank",
        "tokenize_and_group(): drop blank lines, concatenate, cut into full blocks", False)


def missing_labels(model, tokenizer, output_dir) -> Pitfall:
    """Without ``labels`` a causal LM returns no loss, so ``Trainer`` cannot train it."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    snippet = "Trainer(model=model, train_dataset=tokenized['train'])  # no labels column"
    fix = "labels = input_ids in group_texts(); DataCollatorForLanguageModeling(mlm=False)"
    encoded = tokenizer(["the ferry leaves at seven"] * 2)
    dataset = Dataset.from_dict({"input_ids": encoded["input_ids"],
                                 "attention_mask": encoded["attention_mask"]})
    args = TrainingArguments(output_dir=str(output_dir), max_steps=1, per_device_train_batch_size=2,
                             report_to="none", use_cpu=True, save_strategy="no",
                             disable_tqdm=True)
    trainer = Trainer(model=copy.deepcopy(model), args=args, train_dataset=dataset)
    try:
        trainer.train()
    except ValueError as err:
        return Pitfall(snippet, _first_line(err), fix, True)
    return Pitfall(snippet, "trained without labels", fix, False)


def hub_download(hub_reachable: bool, reason: str) -> Pitfall:
    snippet = 'GPT2LMHeadModel.from_pretrained("gpt2")'
    fix = "assets.load_causal_lm(): probe the hub once, then cache → hub → bundled offline model"
    if hub_reachable:
        return Pitfall(snippet, "works here: the hub is reachable", fix, False)
    return Pitfall(snippet, f"no hub here ({reason}); without the probe it retries for ~45 s",
                   fix, True)


def snippet_pitfalls(model, tokenizer, lines: list[str], output_dir, *, max_length: int = 1024,
                     hub_reachable: bool = False, hub_reason: str = ""):
    """All pitfalls as a table: snippet line, what happens here, the fix."""
    import pandas as pd

    rows = [
        hub_download(hub_reachable, hub_reason),
        padding_without_pad_token(tokenizer),
        padded_lines_pitfall(tokenizer, lines, max_length),
        missing_labels(model, tokenizer, output_dir),
        renamed_evaluation_strategy(output_dir),
    ]
    return pd.DataFrame([vars(row) for row in rows])


# ---- the RAG snippet -----------------------------------------------------------------------------
#
# The retrieval-augmented snippet of the same articles, with the Hugging Face RAG model:
#
#     tokenizer = RagTokenizer.from_pretrained("facebook/rag-token-nq")
#     retriever = RagRetriever.from_pretrained("facebook/rag-token-nq", index_name="exact",
#                                              use_dummy_dataset=True)
#     model = RagSequenceForGeneration.from_pretrained("facebook/rag-token-nq", retriever=retriever)
#
# Each function below runs what can run here without downloading gigabytes: a line that needs the
# hub is run only when it fails at once (hub unreachable, so the libraries are offline) or when it
# downloads little (the tokenizer); the rest is reproduced on local stand-ins.

RAG_CHECKPOINT = "facebook/rag-token-nq"
WIKI_DPR_PASSAGES = 21_015_300  # rows of wiki_dpr's psgs_w100 split that have a DPR vector
WIKI_DPR_VECTOR_FILES = 50  # the DPR vectors are published in 50 files
WIKI_DPR_DUMMY_PASSAGES = 10_000  # the dummy configuration keeps the first 10,000 passages


def _first_sentence(err: Exception) -> str:
    text = " ".join(str(err).split())
    end = text.find(". ")
    return f"{type(err).__name__}: {text if end < 0 else text[:end + 1]}"


def tiny_rag_config(**overrides):
    """A ``RagConfig`` as ``facebook/rag-token-nq`` has it (DPR question encoder, BART generator,
    the wiki_dpr index, 768-dimensional passage vectors), with a tiny random encoder and generator
    so it builds in a second, offline."""
    from transformers import BartConfig, DPRConfig, RagConfig

    encoder = DPRConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    # init_std=0.5: the random generator must read its context for the two classes to differ
    generator = BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_position_embeddings=32, init_std=0.5)
    options = {"n_docs": 2, "index_name": "exact", "use_dummy_dataset": True, **overrides}
    return RagConfig.from_question_encoder_generator_configs(encoder, generator, **options)


def _timed_failure(snippet: str, load, fix: str) -> Pitfall:
    import time

    start = time.perf_counter()
    try:
        load()
    except (OSError, ValueError) as err:
        seconds = time.perf_counter() - start
        return Pitfall(snippet, f"{_first_sentence(err)} (after {seconds:.2f} s)", fix, True)
    return Pitfall(snippet, "loaded: the hub is reachable", fix, False)


def rag_tokenizer_download(hub_reachable: bool, reason: str) -> Pitfall:
    """The snippet's first line, run: a few MB when the hub answers, an error at once when not."""
    from transformers import RagTokenizer

    snippet = f'RagTokenizer.from_pretrained("{RAG_CHECKPOINT}")'
    fix = "the workbook's own tokenizer, from assets.load_causal_lm() (offline copies)"
    row = _timed_failure(snippet, lambda: RagTokenizer.from_pretrained(RAG_CHECKPOINT), fix)
    if row.fails and not hub_reachable:
        return Pitfall(snippet, f"{row.outcome}; the hub: {reason}", fix, True)
    return row


def rag_retriever_download(hub_reachable: bool, reason: str) -> Pitfall:
    """The retriever line: run only where it fails at once (it would download the index)."""
    from transformers import RagRetriever

    snippet = (f'RagRetriever.from_pretrained("{RAG_CHECKPOINT}", index_name="exact", '
               "use_dummy_dataset=True)")
    fix = "store.open_collection(): a Chroma index of our own documents, built in notebook 03"
    if hub_reachable:
        return Pitfall(snippet, "not run here: with the hub reachable it starts downloading "
                                "wiki_dpr (next rows)", fix, False)
    return _timed_failure(snippet, lambda: RagRetriever.from_pretrained(
        RAG_CHECKPOINT, index_name="exact", use_dummy_dataset=True), fix)


def rag_model_download(hub_reachable: bool, reason: str) -> Pitfall:
    """The model line: run only where it fails at once (the checkpoint is about 2 GB)."""
    from transformers import RagSequenceForGeneration

    snippet = f'RagSequenceForGeneration.from_pretrained("{RAG_CHECKPOINT}", retriever=retriever)'
    fix = "assets.load_causal_lm(): the workbook's small causal LM reads the retrieved text"
    if hub_reachable:
        return Pitfall(snippet, "not run here: with the hub reachable it downloads the "
                                "checkpoint (about 2 GB)", fix, False)
    return _timed_failure(snippet, lambda: RagSequenceForGeneration.from_pretrained(RAG_CHECKPOINT),
                          fix)


def wiki_dpr_size(config) -> dict[str, float]:
    """Gigabytes of passage vectors behind ``config``'s wiki_dpr index: all of them, and the one
    vector file of 50 that ``use_dummy_dataset=True`` downloads (float32, ``retrieval_vector_size``
    numbers per passage)."""
    vectors = WIKI_DPR_PASSAGES * config.retrieval_vector_size * 4 / 1e9
    return {"all vectors": vectors, "dummy vector file": vectors / WIKI_DPR_VECTOR_FILES}


def wiki_dpr_download(config) -> Pitfall:
    """What the retriever would download: computed from the config, not downloaded."""
    size = wiki_dpr_size(config)
    snippet = f'index_name="{config.index_name}" (the {config.dataset} index)'
    outcome = (f"{WIKI_DPR_PASSAGES:,} Wikipedia passages × {config.retrieval_vector_size} floats "
               f"= {size['all vectors']:.1f} GB of vectors, held in the dataset and again in the "
               f"exact faiss index; use_dummy_dataset=True keeps {WIKI_DPR_DUMMY_PASSAGES:,} "
               f"passages but still downloads the whole passage file and one vector file "
               f"({size['dummy vector file']:.1f} GB)")
    return Pitfall(snippet, outcome, "index only the documents the bot answers from (35 articles, "
                   "a few MB of vectors)", False)


def faiss_requirement(config) -> Pitfall:
    """Building the retriever's index, run on the local config: it needs faiss."""
    import importlib.util

    from transformers import RagRetriever

    snippet = "RagRetriever(...) building its wiki_dpr index"
    fix = "Chroma's own HNSW index (installed with chromadb)"
    if importlib.util.find_spec("faiss") is not None:
        return Pitfall(snippet, "not run here: faiss is installed, so the retriever would go on "
                                "to download wiki_dpr", fix, False)
    try:
        RagRetriever(config, question_encoder_tokenizer=None, generator_tokenizer=None,
                     init_retrieval=False)
    except ImportError as err:
        return Pitfall(snippet, _first_sentence(err), fix, True)
    return Pitfall(snippet, "built without faiss", fix, False)


def wiki_dpr_loading_script(scratch) -> Pitfall:
    """The retriever loads wiki_dpr with options only its loading script knows (``with_index``,
    ``dummy``); this ``datasets`` refuses to run loading scripts. Reproduced on a local stand-in
    for the script (nothing of it is executed)."""
    from pathlib import Path

    import datasets

    snippet = 'load_dataset("wiki_dpr", with_index=False, dummy=True, ...) in RagRetriever'
    fix = "corpus.load_documents() + store.index_folder(): plain files, no loading script"
    folder = Path(scratch) / "wiki_dpr"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wiki_dpr.py").write_text("# a stand-in for the wiki_dpr loading script\n",
                                        encoding="utf-8")
    try:
        datasets.load_dataset(str(folder), with_index=False, split="train", dummy=True)
    except RuntimeError as err:
        return Pitfall(snippet, f"{_first_sentence(err)} (datasets {datasets.__version__}, "
                                "on a local stand-in for the script)", fix, True)
    return Pitfall(snippet, f"datasets {datasets.__version__} still runs loading scripts", fix, False)


def rag_class_mismatch(scratch) -> dict:
    """The rag-token checkpoint loaded into ``RagSequenceForGeneration``, on a tiny random stand-in:
    whether it loads, the class its config names, and the loss each class gives the same weights
    on the same passages and answer (RAG-Token mixes the passages per token, RAG-Sequence per
    whole answer)."""
    import logging
    import warnings
    from pathlib import Path

    import torch
    from transformers import RagSequenceForGeneration, RagTokenForGeneration
    from transformers.utils import logging as hf_logging

    folder = Path(scratch) / "tiny-rag-token"
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    library_logger = logging.getLogger("transformers")
    library_logger.addHandler(handler)
    try:
        torch.manual_seed(0)
        RagTokenForGeneration(tiny_rag_config()).save_pretrained(folder)
        token = RagTokenForGeneration.from_pretrained(folder).eval()
        records.clear()  # count what loading into the other class reports, and only that
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sequence = RagSequenceForGeneration.from_pretrained(folder).eval()
        reported = len(caught) + sum(r.levelno >= logging.WARNING for r in records)
    finally:
        library_logger.removeHandler(handler)
        if bars:
            hf_logging.enable_progress_bar()
    generator = torch.Generator().manual_seed(0)
    passages = torch.randint(4, 64, (token.config.n_docs, 10), generator=generator)
    answer = torch.randint(4, 64, (1, 5), generator=generator)
    inputs = dict(context_input_ids=passages, context_attention_mask=torch.ones_like(passages),
                  doc_scores=torch.tensor([[1.0, 0.5]]), labels=answer)
    with torch.no_grad():
        token_loss = token(**inputs).loss.item()
        sequence_loss = sequence(**inputs).loss.item()
    return {"architectures": list(sequence.config.architectures or []),
            "loaded as": type(sequence).__name__,
            "warnings while loading": reported,
            "loss as RAG-Token": token_loss, "loss as RAG-Sequence": sequence_loss}


def rag_snippet_pitfalls(scratch, *, hub_reachable: bool = False, hub_reason: str = ""):
    """The RAG snippet's lines and what they need, run here: snippet line, what happens, the fix.
    (The checkpoint loaded into the wrong class is :func:`rag_class_mismatch`.)"""
    import pandas as pd

    config = tiny_rag_config()
    rows = [
        rag_tokenizer_download(hub_reachable, hub_reason),
        rag_retriever_download(hub_reachable, hub_reason),
        rag_model_download(hub_reachable, hub_reason),
        wiki_dpr_download(config),
        faiss_requirement(config),
        wiki_dpr_loading_script(scratch),
    ]
    return pd.DataFrame([vars(row) for row in rows])
