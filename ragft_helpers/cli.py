"""The ``ragft`` command: ``doctor``, ``prefetch``, ``finetune``, ``index``, ``ask``,
``classify`` and ``serve-index``."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

import ragft_helpers  # noqa: F401  (probes the hub before any HF library is imported)
from ragft_helpers import assets, checkpoints, doctor, finetune_wikitext, hub, server
from ragft_helpers.config import ConfigError, get_settings
from ragft_helpers.finetune_wikitext import WIKITEXT_FINETUNED
from ragft_helpers.rag import DEFAULT_THRESHOLD
from ragft_helpers.retrieval import DEFAULT_METHOD, METHODS
from ragft_helpers.store import DEFAULT_COLLECTION, StoreError


def cmd_doctor(_args) -> int:
    checks = doctor.run_checks()
    print(doctor.format_checks(checks))
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(failed)} problem(s) found." if failed else "\nAll checks passed.")
    return 1 if failed else 0


def cmd_prefetch(_args) -> int:
    """Online: download every asset into the caches. Offline: report what is cached."""
    settings = get_settings()
    status = hub.status()
    if status.reachable:
        from huggingface_hub import snapshot_download

        for repo in (assets.GPT2, assets.EMBEDDING_REPO):
            print(f"downloading {repo} → {snapshot_download(repo)}")
        from ragft_helpers import wikitext

        print(f"downloaded {wikitext.prefetch_hub_dataset().line()}")
    else:
        print(f"The hub is not reachable ({status.reason}); reporting what is cached.")
        for repo in (assets.GPT2, assets.EMBEDDING_REPO):
            where = assets.cached_snapshot(repo)
            print(f"{repo}: {'cached at ' + where if where else 'not cached'}")
    resolved = assets.load_causal_lm(settings)  # converts the bundled model once if needed
    embedding = assets.resolve_embedding_model(verbose=False)
    print(f"ready offline: {resolved.provenance.line()}")
    print(f"ready offline: {embedding.provenance('embedding').line()}")
    return 0


def cmd_serve_index(args) -> int:
    """Run one Chroma server in the foreground for every process that sets RAGFT_CHROMA_URL."""
    return server.serve(args.path, args.host, args.port)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of steps >= 1, got {text!r}")
    return value


def _model_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plain name; use letters, digits, '.', '_' or '-' (it becomes the "
            "folder RAGFT_CACHE_DIR/finetuned/<profile>/<name>)")
    return text


def _exit_launched_process() -> None:
    """End a process that ``torchrun`` or ``accelerate launch`` started, once its work is done.

    With torch's CPU (Gloo) process group, both ways of ending one can fail at random:
    ``destroy_process_group`` can deadlock (DDP's reducer frees the group while holding the GIL
    that a Gloo worker thread is waiting for; pytorch/pytorch#56297), and a process that exits with
    the group alive can abort in Gloo's threads ("terminate called without an active exception").
    So every rank waits at a barrier (no collective is left in flight), flushes its output and
    exits at once with status 0. Outside such a launch this does nothing.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cmd_finetune(args) -> int:
    """Fine-tune the language model on WikiText with the budgets of RAGFT_PROFILE.

    Under ``accelerate launch`` or ``torchrun`` every process trains (``Trainer`` shares the
    work); only the main process prints the summary and saves the model.
    """
    settings = get_settings()
    run = finetune_wikitext.finetune_on_wikitext(settings, output_dir=args.output_dir,
                                        resume=not args.no_resume, max_steps=args.max_steps)
    if run.trainer.is_world_process_zero():
        _print_and_save(run, args, settings)
    _exit_launched_process()
    return 0


def _print_and_save(run, args, settings) -> None:
    """The main process's part of ``ragft finetune``: the summary, and the model if asked."""
    for provenance in run.provenance:
        print(provenance.line())
    output = run.train_output
    print(f"profile {settings.profile.name}: step {output.global_step} of {run.trainer.args.max_steps} "
          f"after {run.seconds:.0f} s; checkpoints in {run.trainer.args.output_dir}")
    print(f"train loss (mean over the steps of this run): {output.training_loss:.4f}")
    evals = run.history.dropna(subset=["eval_loss"])
    if len(evals):
        first, last = evals.iloc[0], evals.iloc[-1]
        print(f"validation loss {first.eval_loss:.4f} (step {int(first.step)}) -> "
              f"{last.eval_loss:.4f} (step {int(last.step)}); perplexity "
              f"{math.exp(first.eval_loss):.1f} -> {math.exp(last.eval_loss):.1f}")
    if args.save_as:
        path = checkpoints.save_finetuned(run.model, run.tokenizer, args.save_as, settings)
        print(f"saved to {path}; notebooks load it with checkpoints.load_finetuned({args.save_as!r})")
    return 0


def cmd_index(args) -> int:
    """Index a folder of documents (bring your own): added / updated / removed / unchanged."""
    from ragft_helpers import store

    settings = get_settings()
    collection = store.open_collection(settings, args.collection)
    report = store.index_folder(args.path, collection, settings=settings)
    print(f"collection {args.collection!r}: {collection.count()} chunks — {report.added} added, "
          f"{report.updated} updated, {report.removed} removed, {report.unchanged} unchanged "
          f"({report.seconds:.1f} s)")
    return 0


def _questions(args) -> list[str]:
    """The question argument, or the ``"question"`` of every line of ``--questions``."""
    if args.question is not None:
        return [args.question]
    path = Path(args.questions)
    if not path.is_file():
        raise ConfigError(f"--questions {path}: no such file. Give a JSON-lines file with one "
                          '{"question": "..."} per line.')
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            questions.append(str(json.loads(line)["question"]))
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f'{path}, line {number}: expected a JSON object with a "question", '
                              f"got {line[:60]!r}.") from None
    if not questions:
        raise ConfigError(f"{path} holds no questions.")
    return questions


def answer_record(question: str, reply) -> dict:
    """One ``ragft ask`` result as a JSON-ready dict."""
    return {"question": question, "answer": reply.text, "abstained": reply.abstained,
            "sources": [{"rank": n, "file": c.metadata.get("source", "?"),
                         "heading_path": c.metadata.get("heading_path", ""),
                         "score": round(c.score, 4)} for n, c in enumerate(reply.sources, start=1)],
            "retrieval_ms": round(reply.retrieval_ms, 1),
            "generation_ms": round(reply.generation_ms, 1),  # prompt building, prefill and decode
            "prefill_ms": round(reply.prefill_ms, 1),  # time to the first new token
            "decode_ms": round(reply.decode_ms, 1)}


def _print_record(record: dict) -> None:
    print(f"Q: {record['question']}")
    print(f"A: {record['answer']}" + ("   [abstained]" if record["abstained"] else ""))
    for source in record["sources"]:
        print(f"   {source['rank']}. {source['file']} > {source['heading_path']} "
              f"(score {source['score']:.3f})")
    timing = f"   retrieval {record['retrieval_ms']:,.0f} ms, generation {record['generation_ms']:,.0f} ms"
    if not record["abstained"]:
        timing += f" (prefill {record['prefill_ms']:,.0f} ms, decode {record['decode_ms']:,.0f} ms)"
    print(timing)


def cmd_ask(args) -> int:
    """Answer questions from an indexed collection with the notebooks' own ``rag.answer``."""
    from ragft_helpers import rag, retrieval, store

    settings = get_settings()
    questions = _questions(args)
    collection = store.existing_collection(settings, args.collection)
    store.require_index(collection)
    if args.reader == "raft":
        from ragft_helpers import raft

        resolved = raft.load_reader(raft.CHAT_READER, settings)  # trains nothing: an error names what does
    else:
        resolved = assets.load_causal_lm(settings)
    loading = retrieval.warm_up(collection, settings=settings, method=args.retrieval)
    print(f"retriever loaded in {loading:.1f} s (not counted in the answers' retrieval times)")
    records = []
    for question in questions:
        reply = rag.answer(question, model=resolved.model, tokenizer=resolved.tokenizer,
                           collection=collection, k=args.k, threshold=args.threshold,
                           settings=settings, method=args.retrieval)
        records.append(answer_record(question, reply))
        if args.out is None:
            _print_record(records[-1])
    if args.out is not None:
        Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                  encoding="utf-8")
        print(f"{len(records)} answers written to {args.out}")
    return 0


def _question_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the question is empty: type a question, e.g. "
                                         "'How much does the Tern Card cost?'")
    return text


def _messages_to_classify(args) -> list[str]:
    """The message argument, or the ``"text"`` of every line of ``--in``."""
    if args.message is not None:
        if not args.message.strip():
            raise ValueError("The message is empty: give the text of a customer message, e.g. "
                             "ragft classify 'can I bring my dog on the ferry?'.")
        return [args.message]
    path = Path(args.infile)
    if not path.is_file():
        raise ConfigError(f"--in {path}: no such file. Give a JSON-lines file with one "
                          '{"text": "..."} per line.')
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f'{path}, line {number}: expected a JSON object with a "text", '
                              f"got {line[:60]!r}.") from None
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f'{path}, line {number}: the "text" is empty.')
        texts.append(text)
    if not texts:
        raise ConfigError(f"{path} holds no messages.")
    return texts


def cmd_classify(args) -> int:
    """Sort customer messages into intents with a saved system of notebook 07 (nothing is trained)."""
    from ragft_helpers import tasks

    texts = _messages_to_classify(args)
    system = tasks.load_method(args.method, get_settings(), classifier=args.classifier)
    records = []
    for text in texts:
        prediction = system.predict(text)
        records.append({"text": text, "label": prediction.label, "method": args.method,
                        "scores": {label: round(score, 4) for label, score in prediction.scores.items()}})
        if args.out is None:
            ranked = sorted(prediction.scores.items(), key=lambda item: -item[1])
            print(f"{prediction.label}\t{text}")
            print("   " + ", ".join(f"{label} {score:.3f}" for label, score in ranked))
    if args.out is not None:
        Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                  encoding="utf-8")
        print(f"{len(records)} labels written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ragft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="check the machine, packages and assets").set_defaults(
        run=cmd_doctor)
    commands.add_parser("prefetch", help="cache models and data sets for offline use"
                        ).set_defaults(run=cmd_prefetch)
    tune = commands.add_parser(
        "finetune", help="fine-tune the language model on WikiText (profile from RAGFT_PROFILE)")
    tune.add_argument("--output-dir", help="checkpoint folder (default: "
                      "RAGFT_CACHE_DIR/runs/wikitext-finetuned-<model>-<profile>-<settings key>)")
    tune.add_argument("--max-steps", type=_positive_int,
                      help="optimiser steps (default: the profile's train_max_steps)")
    tune.add_argument("--no-resume", action="store_true",
                      help="start from step 0 even if the output folder holds checkpoints")
    tune.add_argument("--save-as", metavar="NAME", type=_model_name,
                      help="also save the model to RAGFT_CACHE_DIR/finetuned/<profile>/NAME, where "
                           "checkpoints.load_finetuned(NAME) finds it (notebook 02 saves as "
                           f"{WIKITEXT_FINETUNED})")
    tune.set_defaults(run=cmd_finetune)
    index = commands.add_parser("index", help="index a folder of documents (.md, .txt, .rst, .raw)")
    index.add_argument("path", help="the folder that holds the documents")
    index.add_argument("--collection", default=DEFAULT_COLLECTION,
                       help="collection name (default: %(default)s, the knowledge base)")
    index.set_defaults(run=cmd_index)
    ask = commands.add_parser("ask", help="answer questions from an indexed collection")
    asked = ask.add_mutually_exclusive_group(required=True)
    asked.add_argument("question", nargs="?", type=_question_text, help="one question")
    asked.add_argument("--questions", metavar="FILE.jsonl",
                       help='a batch: one {"question": ...} per line')
    ask.add_argument("--out", metavar="FILE.jsonl", help="write one JSON result per line here")
    ask.add_argument("--collection", default=DEFAULT_COLLECTION, help="default: %(default)s")
    ask.add_argument("--k", type=int, default=None,
                     help="chunks in the prompt (default: the profile's rag_k)")
    ask.add_argument("--retrieval", choices=METHODS, default=DEFAULT_METHOD,
                     help="retrieval method (default: %(default)s)")
    ask.add_argument("--reader", choices=("base", "raft"), default="base",
                     help="the model that reads the context: the base model, or the reader "
                          "trained by retrieval-augmented fine-tuning (raft.ensure_reader)")
    ask.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                     help="abstain when no retrieved chunk's cosine similarity reaches this "
                          "(default: %(default)s)")
    ask.set_defaults(run=cmd_ask)
    classify = commands.add_parser(
        "classify", help="sort customer messages into intents with notebook 07's saved systems")
    given = classify.add_mutually_exclusive_group(required=True)
    given.add_argument("message", nargs="?", help="one customer message")
    given.add_argument("--in", dest="infile", metavar="FILE.jsonl",
                       help='a batch: one {"text": ...} per line')
    classify.add_argument("--out", metavar="FILE.jsonl",
                          help="write one JSON result (text, label, scores) per line here")
    classify.add_argument("--method", choices=("zero-shot", "few-shot", "knn", "finetuned"),
                          default="finetuned", help="default: %(default)s")
    classify.add_argument("--classifier", choices=("minilm", "lm-full", "lm-lora"), default="minilm",
                          help="which fine-tuned classifier --method finetuned loads "
                               "(default: %(default)s)")
    classify.set_defaults(run=cmd_classify)
    serve_index = commands.add_parser(
        "serve-index", help="run one Chroma server so several processes can share the index")
    serve_index.add_argument("--path", help="index folder (default: RAGFT_CACHE_DIR/chroma-server)")
    serve_index.add_argument("--host", default=server.DEFAULT_HOST,
                             help="address to listen on (default: %(default)s, loopback only; "
                                  "the server has no authentication)")
    serve_index.add_argument("--port", type=int, default=server.DEFAULT_PORT,
                             help="default: %(default)s")
    serve_index.set_defaults(run=cmd_serve_index)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, assets.AssetError, server.ServerError, StoreError, FileNotFoundError,
            NotADirectoryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
