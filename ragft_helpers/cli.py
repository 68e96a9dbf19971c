"""The ``ragft`` command: ``doctor``, ``prefetch``, ``finetune`` and ``serve-index``."""
from __future__ import annotations

import argparse
import math
import re
import sys

import ragft_helpers  # noqa: F401  (probes the hub before any HF library is imported)
from ragft_helpers import assets, doctor, hub, server
from ragft_helpers.config import ConfigError, get_settings
from ragft_helpers.finetune import WIKITEXT_FINETUNED


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
            where = assets._cached_snapshot(repo)
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


def cmd_finetune(args) -> int:
    """Fine-tune the language model on WikiText with the budgets of RAGFT_PROFILE.

    Under ``accelerate launch`` or ``torchrun`` every process trains (``Trainer`` shares the
    work); only the main process prints the summary and saves the model.
    """
    from ragft_helpers import finetune

    settings = get_settings()
    run = finetune.finetune_on_wikitext(settings, output_dir=args.output_dir,
                                        resume=not args.no_resume, max_steps=args.max_steps)
    if not run.trainer.is_world_process_zero():
        return 0
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
        path = finetune.save_finetuned(run.model, run.tokenizer, args.save_as, settings)
        print(f"saved to {path}; notebooks load it with finetune.load_finetuned({args.save_as!r})")
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
                      "RAGFT_CACHE_DIR/runs/wikitext-finetuned-<model>-<profile>)")
    tune.add_argument("--max-steps", type=_positive_int,
                      help="optimiser steps (default: the profile's train_max_steps)")
    tune.add_argument("--no-resume", action="store_true",
                      help="start from step 0 even if the output folder holds checkpoints")
    tune.add_argument("--save-as", metavar="NAME", type=_model_name,
                      help="also save the model to RAGFT_CACHE_DIR/finetuned/<profile>/NAME, where "
                           "finetune.load_finetuned(NAME) finds it (notebook 02 saves as "
                           f"{WIKITEXT_FINETUNED})")
    tune.set_defaults(run=cmd_finetune)
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
    except (ConfigError, assets.AssetError, server.ServerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
