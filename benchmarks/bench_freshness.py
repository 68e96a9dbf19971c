"""Freshness: does RAG answer with the new fact once the notices that change it are indexed?

The notices in ``data/knowledge_updates`` each name the article they supersede and the date from
which they apply (``Effective:``, ``Supersedes:``). The "updated" questions of
``data/qa/questions.jsonl`` ask for a fact a notice changed. Measured in one run, on a fresh index
in ``benchmarks/_work/freshness`` and the resolved language model (the profile's ``rag_k``):

- multiple-choice and free-form accuracy (``harness.evaluate_system``) on every updated question,
  as written ("canonical") and in each of its realistic rephrasings ("variants"):
  RAG before the notices are indexed; after indexing them, for each ``--modes`` way of handling
  what a notice supersedes (the settings' ``supersede``: "none" treats notices as ordinary
  documents, the result without the fix; "rewrite" shows the chunks a notice changes with the new
  values; "demote" and "article" rank them below the notice, ``retrieval.apply_notices``); and,
  with ``--stale``, the fine-tuned ``kb-full`` variant (notebook 05), which learned the old facts;
- where those answers come from: the share of prompts that hold the notice, and the share that
  hold the old value (``answer_before``) anywhere in the context;
- every other answerable question with the notices indexed, so that superseding an article's
  changed part does not cost the rest of it: section-level hit@1/hit@5/MRR (k = 5, hybrid) for
  the knowledge base alone and for each mode, and the multiple-choice accuracy of the questions
  whose prompt a mode changes, in that mode and without it (an unchanged prompt gives the same
  answer).

    python benchmarks/bench_freshness.py [--modes none,rewrite,demote,article] [--stale] [--train-stale]

``--stale`` scores ``kb-full`` when notebook 05 saved it for the profile; ``--train-stale``
trains it first when it is missing. Prints the tables, writes them to
``benchmarks/results/freshness-<profile>.md`` and puts them, with the command, in the
"## Freshness" section of ``benchmarks/README.md`` (the other sections are left as they are).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import ragft_helpers  # noqa: F401  (before transformers: sets offline mode when the hub is unreachable)
from ragft_helpers import harness, injection, rag, retrieval, retrieval_metrics, store
from ragft_helpers.assets import load_causal_lm
from ragft_helpers.config import DEFAULT_SUPERSEDE, KNOWLEDGE_DIR, SUPERSEDE_MODES, UPDATES_DIR, get_settings
from ragft_helpers.qa import load_questions
from ragft_helpers.scoring import normalise

import torch

from bench_rag import busy_cpu_seconds, own_cpu_seconds  # noqa: E402  (same directory)

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "freshness"
README = HERE / "README.md"
SECTION = "## Freshness"
COMMAND = "python benchmarks/bench_freshness.py"
TARGET = 0.60  # multiple-choice accuracy on the updated questions after indexing, with the fix
QUALITY_K = 5


def phrasings(questions) -> dict[str, list]:
    """The questions as written, and every one of their variants as a question of its own."""
    return {"canonical": list(questions),
            "variants": [harness.as_phrasing(q, n) for q in questions for n in range(len(q.variants))]}


def context_rows(questions, collection, settings) -> dict[str, float]:
    """Share of the prompts (the ``rag_k`` retrieved chunks) that hold a notice in force, and
    share that state the old value anywhere."""
    has_notice = has_old = 0
    for question in questions:
        chunks = retrieval.retrieve(question.question, settings.profile.rag_k, collection,
                                    settings=settings)
        context = f" {normalise(rag.format_context(chunks))} "
        has_notice += any(chunk.supersedes or chunk.metadata.get("notice") for chunk in chunks)
        has_old += f" {normalise(question.answer_before)} " in context
    return {"notice in context": has_notice / len(questions), "old value in context": has_old / len(questions)}


def score(system, asked: dict[str, list], settings, row: str, collection=None) -> list[dict]:
    """One row per phrasing: multiple-choice and free-form accuracy of ``system``."""
    rows = []
    for phrasing, questions in asked.items():
        start = time.perf_counter()
        summary = harness.evaluate_system(system, questions, settings).summary()
        rows.append({"system": row, "phrasing": phrasing, "n": len(questions),
                     "mc": summary["mc"]["value"], "mc_low": summary["mc"]["low"],
                     "mc_high": summary["mc"]["high"], "free": summary["free"]["value"],
                     **(context_rows(questions, collection, settings) if collection is not None else {}),
                     "seconds": time.perf_counter() - start})
        print(f"{row}, {phrasing}: mc {rows[-1]['mc']:.2f}, free {rows[-1]['free']:.2f} "
              f"({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def quality(questions, collection, settings, label: str) -> list[dict]:
    """Section-level hit@1/hit@5/MRR of the default retrieval on ``questions`` and their variants."""
    rows = []
    for variants in (False, True):
        ranks = retrieval_metrics.retrieval_ranks(questions, collection, QUALITY_K,
                                                  variants=variants, settings=settings)
        overall = retrieval_metrics.retrieval_quality(ranks, (1, QUALITY_K)).loc["all"]
        rows.append({"index": label, "phrasing": "variants" if variants else "canonical",
                     "questions": int(overall["questions"]), "hit@1": overall["hit@1"],
                     f"hit@{QUALITY_K}": overall[f"hit@{QUALITY_K}"], "MRR": overall["MRR"]})
    return rows


def changed_prompts(questions, collection, settings, mode: str, tokenizer) -> list:
    """The questions whose multiple-choice prompt differs in ``mode`` from mode "none"."""
    def prompt(question, with_mode):
        chunks = retrieval.retrieve(question.question, settings.profile.rag_k, collection,
                                    settings=replace(settings, supersede=with_mode))
        return rag.build_prompt(question.question, chunks, tokenizer)

    return [q for q in questions if prompt(q, mode) != prompt(q, "none")]


def others_note(r: dict) -> str:
    if "others_share" not in r:
        return "load from other processes not measured"
    return f"other processes used {r['others_share']:.0%} of the cores during the run"


def accuracy_table(rows: list[dict]) -> str:
    lines = ["| system | phrasing | n | multiple choice (95% CI) | free-form | notice in context | "
             "old value in context |", "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        context = (f"{r['notice in context']:.2f} | {r['old value in context']:.2f}"
                   if "notice in context" in r else "– | –")
        lines.append(f"| {r['system']} | {r['phrasing']} | {r['n']} | {r['mc']:.2f} "
                     f"({r['mc_low']:.2f}–{r['mc_high']:.2f}) | {r['free']:.2f} | {context} |")
    return "\n".join(lines) + "\n"


def quality_table(rows: list[dict]) -> str:
    lines = ["| index and ranking | phrasing | questions | hit@1 | hit@5 | MRR |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['index']} | {r['phrasing']} | {r['questions']} | {r['hit@1']:.3f} | "
                     f"{r['hit@5']:.3f} | {r['MRR']:.3f} |")
    return "\n".join(lines) + "\n"


def changed_table(rows: list[dict]) -> str:
    lines = ["| mode | phrasing | questions whose prompt the mode changes | multiple choice, mode "
             "\"none\" | multiple choice, the mode |", "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        none = f"{r['mc_none']:.2f}" if r["n"] else "–"
        mode = f"{r['mc_mode']:.2f}" if r["n"] else "–"
        lines.append(f"| {r['mode']} | {r['phrasing']} | {r['n']} of {r['of']} | {none} | {mode} |")
    return "\n".join(lines) + "\n"


def verdict_line(r: dict) -> str:
    fixed = [row for row in r["accuracy"] if row["system"] == f"RAG, notices indexed, {DEFAULT_SUPERSEDE}"]
    parts = [f"{row['phrasing']} {row['mc']:.2f}" for row in fixed]
    met = bool(fixed) and all(row["mc"] >= TARGET for row in fixed)
    return (f"Target: multiple-choice accuracy ≥ {TARGET:.2f} after indexing the notices with the "
            f"default ranking ({DEFAULT_SUPERSEDE}): {', '.join(parts)} — {'met' if met else 'not met'}.")


def report(r: dict) -> str:
    setup = (f"Profile {r['profile']} (k = {r['k']}, ≤ {r['max_new_tokens']} new tokens, greedy); "
             f"{r['updated']} updated questions and their {r['variants']} variants; "
             f"{r['others']} other answerable questions; language model {r['model']}; "
             f"retrieval hybrid; {r['cpus']} CPU cores, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), Python {platform.python_version()}; "
             f"{others_note(r)}; {r['minutes']:.0f} minutes.")
    return (f"{setup}\n\nUpdated questions (the answer is the value after the notice):\n\n"
            f"{accuracy_table(r['accuracy'])}\n{verdict_line(r)}\n\n"
            f"Every other answerable question, retrieval (section level, k = {QUALITY_K}):\n\n"
            f"{quality_table(r['quality'])}\n"
            f"Every other answerable question, multiple choice where the prompt changes:\n\n"
            f"{changed_table(r['changed'])}")


def update_readme(body: str) -> None:
    """Write ``body`` under the "## Freshness" heading, leaving other sections alone."""
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    section = f"{SECTION}\n\n{body}"
    if SECTION + "\n" not in text:
        README.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")
        return
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    rest = text[end + 1:] if end != -1 else ""
    README.write_text(text[:start] + section + ("\n" + rest if rest else ""), encoding="utf-8")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="none,rewrite,demote,article",
                        help=f"ways of ranking superseded text to score, of {', '.join(SUPERSEDE_MODES)}")
    parser.add_argument("--stale", action="store_true", help="score the fine-tuned kb-full variant")
    parser.add_argument("--train-stale", action="store_true", help="train kb-full when it is missing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in SUPERSEDE_MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; use {', '.join(SUPERSEDE_MODES)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = get_settings()
    started, busy_before, own_before = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    shutil.rmtree(WORK, ignore_errors=True)
    local = replace(settings, cache_dir=WORK, chroma_url=None)  # the index only; models as usual
    collection = store.open_collection(local)
    store.index_folder(KNOWLEDGE_DIR, collection, progress=False, settings=local)

    questions = load_questions()
    updated = [q for q in questions if q.type == "updated"]
    others = [q for q in questions if q.answerable and q.type != "updated"]
    asked = phrasings(updated)
    base = load_causal_lm(settings)
    rag_system = harness.System("RAG", base.model, base.tokenizer, retrieval=True, collection=collection)

    accuracy = score(rag_system, asked, local, "RAG, before the notices are indexed", collection)
    quality_rows = quality(others, collection, local, "knowledge base alone")
    store.index_folder(UPDATES_DIR, collection, progress=False, settings=local)
    changed = []
    for mode in modes:
        with_mode = replace(local, supersede=mode)
        label = f"RAG, notices indexed, {mode}" + (" (no fix)" if mode == "none" else "")
        accuracy += score(rag_system, asked, with_mode, label, collection)
        quality_rows += quality(others, collection, with_mode, f"with the notices, {mode}")
        if mode == "none":
            continue
        for phrasing, subset in phrasings(others).items():
            moved = changed_prompts(subset, collection, local, mode, base.tokenizer)
            row = {"mode": mode, "phrasing": phrasing, "n": len(moved), "of": len(subset)}
            if moved:
                for name, value in (("mc_none", "none"), ("mc_mode", mode)):
                    result = harness.evaluate_system(rag_system, moved, replace(local, supersede=value),
                                                     free_form=[])
                    row[name] = result.summary()["mc"]["value"]
            changed.append(row)
            print(f"{mode}, {phrasing}: {len(moved)} prompts changed", flush=True)
    if args.stale or args.train_stale:
        saved = injection.variant_run("kb-full", settings) is not None
        if not saved and args.train_stale:
            injection.ensure_variants(settings, ["kb-full"])
            saved = True
        if saved:
            stale = injection.load_variant("kb-full", settings)
            ft = harness.System("FT (kb-full, stale)", stale.model, stale.tokenizer)
            accuracy += score(ft, asked, local, "FT kb-full (trained on the old facts)")
        else:
            print("kb-full is not saved for this profile: run notebook 05 or pass --train-stale")

    results = {"profile": settings.profile.name, "k": settings.profile.rag_k,
               "max_new_tokens": settings.profile.max_new_tokens, "updated": len(updated),
               "variants": len(asked["variants"]), "others": len(others),
               "model": base.provenance.name, "cpus": os.cpu_count(), "accuracy": accuracy,
               "quality": quality_rows, "changed": changed,
               "minutes": (time.perf_counter() - started) / 60}
    busy_after = busy_cpu_seconds()
    if busy_before is not None and busy_after is not None:
        others_cpu = busy_after - busy_before - (own_cpu_seconds() - own_before)
        results["others_share"] = max(0.0, others_cpu) / ((time.perf_counter() - started) * os.cpu_count())
    command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    body = report(results)
    print(body)
    path = HERE / "results" / f"freshness-{settings.profile.name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Freshness benchmark\n\n{body}\nReproduce: `RAGFT_PROFILE={settings.profile.name} "
                    f"{command}`\n", encoding="utf-8")
    update_readme(f"`RAGFT_PROFILE={settings.profile.name} {command}` (full tables: "
                  f"[results/{path.name}](results/{path.name}))\n\n{body}")
    shutil.rmtree(WORK, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
