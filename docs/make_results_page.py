"""Build the "expected results" page of a profile from the results files of a real run.

    python docs/make_results_page.py                    # laptop: docs/results-laptop.md
    python docs/make_results_page.py --profile smoke --out /tmp/results-smoke.md

Reads what the notebooks saved with ``ragft_helpers.results.save_results``:
``RAGFT_CACHE_DIR/results/showdown-<profile>.json`` (notebook 08, required) and
``raft-<profile>.json`` (notebook 06, optional) and ``tasks-<profile>.json`` (notebook 07,
optional). Nothing on the page is typed: the date, the
versions, the models and every table come from those files, the claims table included (each
verdict computed by ``ragft_helpers.claims`` when notebook 08 ran). Without a showdown
file the script writes nothing and prints the command that produces one.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOWDOWN = "showdown"
SHOWDOWN_NOTEBOOK = "notebooks/08_rag_vs_finetuning_showdown.ipynb"
# The optional results files, by stem: (notebook number, notebook path), in page order.
OPTIONAL = {"raft": ("06", "notebooks/06_teach_the_model_to_read.ipynb"),
            "tasks": ("07", "notebooks/07_task_finetuning_vs_retrieval.ipynb")}
RAFT_METRICS = ("free", "false_abstention", "abstention", "mc")
ACCURACY_METRICS = ("mc", "free", "abstention", "hallucination")


def how_to_produce(profile: str, path: Path) -> str:
    return (f"No results at {path}. A run of the showdown at the `{profile}` profile writes it:\n"
            f"  RAGFT_PROFILE={profile} make run        (every notebook, into outputs/)\n"
            f"or only the showdown (it trains notebook 05's models if they are missing):\n"
            f"  RAGFT_PROFILE={profile} .venv/bin/jupyter nbconvert --to notebook --execute "
            f"--output-dir outputs {SHOWDOWN_NOTEBOOK}\n"
            f"Then: make results-page RESULTS_PROFILE={profile} (with the same RAGFT_CACHE_DIR).")


# ---- formatting ------------------------------------------------------------------------------

def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def num(value, digits: int = 2) -> str:
    if _missing(value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value).replace("|", "/").replace("\n", " ")


def interval(record: dict, key: str = "value", low: str = "low", high: str = "high") -> str:
    if _missing(record.get(key)):
        return "—"
    text = f"{record[key]:.2f}"
    if not (_missing(record.get(low)) or _missing(record.get(high))):
        text += f" [{record[low]:.2f}, {record[high]:.2f}]"
    return text + (f" (n={record['n']})" if "n" in record else "")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def figure(folder: Path | None, name: str, caption: str, draw, ncols: int = 1) -> list[str]:
    """Draw ``draw(axes)`` with the notebooks' own plotting functions into ``folder/name`` and
    return the Markdown that shows it (nothing when ``folder`` is None)."""
    if folder is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(10 if ncols == 1 else 5 * ncols, 4))
    draw(axes)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / name, dpi=80)
    plt.close(fig)
    return [f"![{caption}]({folder.name}/{name})", ""]


def pivot(records: list[dict], metrics: list[str], systems: list[str]) -> list[list[str]]:
    """One row per system, one interval cell per metric."""
    cells = {(r["system"], r["metric"]): r for r in records}
    return [[system, *(interval(cells[(system, m)]) if (system, m) in cells else "—"
                       for m in metrics)] for system in systems]


def _systems(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["system"] for r in records))


# ---- sections --------------------------------------------------------------------------------

def run_section(document: dict, path: Path, label: str) -> list[str]:
    settings = document.get("settings", {})
    profile = document.get("profile", {})
    machine = document.get("machine")
    if isinstance(machine, dict):
        machine_text = ", ".join(f"{k}: {num(v)}" for k, v in machine.items())
    elif machine:
        machine_text = num(machine)
    else:
        machine_text = ("not recorded in the results file (it records the package versions and "
                        "the models, not the hardware)")
    versions = ", ".join(f"{k} {v}" for k, v in document.get("versions", {}).items())
    rows = [["saved", num(document.get("saved_at", "not recorded"))],
            ["file", f"`{path.name}`"],
            ["profile", f"`{settings.get('profile', profile.get('name', '?'))}` — "
                        f"{num(profile.get('description', ''))}"],
            ["seed", num(settings.get("seed", "?"))],
            ["model setting (`RAGFT_MODEL`)", num(settings.get("model") or "unset")],
            ["machine", machine_text],
            ["package versions", versions or "not recorded"]]
    for item in document.get("provenance", []):
        note = f" — {item['note']}" if item.get("note") else ""
        rows.append([f"{item.get('kind', 'model')}: {item.get('name', '?')}",
                     num(f"{item.get('source', '?')}{note}")])
    return [f"### {label}", "", *table(["", ""], rows)]


def showdown_section(document: dict, figures: Path | None = None) -> list[str]:
    import pandas as pd

    from ragft_helpers import viz

    lines = ["## Notebook 08: RAG versus fine-tuning", ""]
    accuracy = document.get("accuracy", [])
    systems = _systems(accuracy)
    if accuracy:
        lines += ["### Accuracy, with 95% bootstrap intervals", "",
                  "Multiple choice (`mc`) on every answerable question of the sample; free-form "
                  "answers, abstention and hallucination on the free-form subset.", "",
                  *table(["system", *ACCURACY_METRICS],
                         pivot(accuracy, list(ACCURACY_METRICS), systems)),
                  *figure(figures, "accuracy.png", "accuracy of every system",
                          lambda ax: viz.plot_accuracy(pd.DataFrame(accuracy), systems,
                                                       ylabel="accuracy", chance=None, ax=ax))]
    by_type = document.get("accuracy_by_type", [])
    if by_type:
        metrics = list(dict.fromkeys(r["metric"] for r in by_type))
        lines += ["### Multiple-choice accuracy by question type", "",
                  *table(["system", *(m.removeprefix("mc_") for m in metrics)],
                         pivot(by_type, metrics, _systems(by_type))),
                  *figure(figures, "accuracy-by-type.png", "multiple-choice accuracy by type",
                          lambda ax: viz.plot_accuracy(pd.DataFrame(by_type), _systems(by_type),
                                                       ax=ax))]
    costs = document.get("costs", [])
    if costs:
        columns = [c for c in costs[0] if c != "system"]
        lines += ["### Cost", "", *table(["system", *columns],
                                         [[r["system"], *(num(r.get(c), 1 if "latency" not in c else 2)
                                                          for c in columns)] for r in costs])]
    perplexities = document.get("perplexities", [])
    if perplexities:
        columns = [c for c in perplexities[0] if c != "model"]
        lines += ["### Perplexity: forgetting (WikiText) and fit (knowledge-base text)", "",
                  *table(["model", *columns],
                         [[r["model"], *(num(r.get(c), 1) for c in columns)] for r in perplexities]),
                  *figure(figures, "perplexity.png", "perplexity of each model",
                          lambda axes: pd.DataFrame(perplexities).set_index("model").plot.bar(
                              subplots=True, ax=axes, legend=False, rot=0),
                          ncols=len(columns))]
    curve = document.get("forgetting", [])
    if curve:
        lines += ["### Forgetting, watched: kb-full's recipe trained longer", "",
                  "Held-out WikiText perplexity measured by `Trainer` before the first step and "
                  "along the run; the training loss on the articles at the same steps.", "",
                  *table(["step", "WikiText perplexity", "training loss"],
                         [[num(r["step"]), num(r["wikitext_perplexity"], 1), num(r.get("kb_loss"), 2)]
                          for r in curve])]
    freshness = document.get("freshness", [])
    if freshness:
        lines += ["### Freshness: the updated questions", "",
                  *table(["system", "multiple-choice accuracy", "free-form accuracy",
                          "seconds to adapt"],
                         [[r["system"], interval(r, "multiple choice"), num(r.get("free-form")),
                           num(r.get("seconds to adapt"), 1)] for r in freshness])]
    variants = document.get("variants", [])
    if variants:
        lines += ["### The fine-tuned variants", "",
                  *table(["variant", "LoRA", "paraphrases", "steps", "tokens seen", "training s",
                          "peak MB", "loss first → last"],
                         [[v["name"], num(v.get("lora")), num(v.get("augmented")), num(v.get("steps")),
                           num(v.get("tokens_seen")), num(v.get("train_seconds"), 0),
                           num(v.get("peak_memory_mb"), 0),
                           f"{num(v.get('first_loss'))} → {num(v.get('final_loss'))}"]
                          for v in variants])]
    claims = document.get("claims", [])
    if claims:
        lines += ["### The claims, with computed verdicts", "",
                  "Saved by notebook 08; each verdict is computed by `ragft_helpers.claims` from "
                  "the evidence (overlapping 95% intervals give \"inconclusive at this scale\"). "
                  "\"asserted\" is the direction notebook 08 checks at every profile, CI's included.", "",
                  *table(["claim", "the article says", "evidence", "verdict", "asserted"],
                         [[num(c["claim"]), num(c.get("article", "")), num(c["evidence"]),
                           f"**{c['verdict']}**", num(c.get("asserted") or "—")] for c in claims])]
    return lines


def raft_section(document: dict, figures: Path | None = None) -> list[str]:
    import pandas as pd

    from ragft_helpers import viz

    lines = ["## Notebook 06: teach the model to read (RAFT)", ""]
    rows = document.get("table", [])
    if rows:
        n = document.get("questions")
        lines += ["### Every system on the test articles' questions, by phrasing", "",
                  "Free-form accuracy on answerable questions (`free`), \"I don't know\" to an "
                  "answerable question (`false_abstention`, lower is better) and to an unanswerable "
                  "one (`abstention`, higher is better), multiple choice (`mc`)"
                  + (f"; {num(n)} questions, each asked as written and as a variant" if n else "")
                  + ".", ""]
        for phrasing in dict.fromkeys(r["phrasing"] for r in rows):
            records = [r for r in rows if r["phrasing"] == phrasing]
            lines += [f"**{phrasing}**", "",
                      *table(["system", *RAFT_METRICS], pivot(records, list(RAFT_METRICS),
                                                              _systems(records)))]
        free = pd.DataFrame([r for r in rows if r["metric"] == "free"])
        lines += figure(figures, "raft-free-form.png", "free-form accuracy by phrasing",
                        lambda ax: viz.plot_accuracy(free.assign(metric=free["phrasing"]),
                                                     _systems(rows), ax=ax, chance=None,
                                                     ylabel="free-form accuracy (answerable)"))
    pooled = document.get("pooled", {})
    if pooled:
        lines += ["### Free-form accuracy, both phrasings pooled", "",
                  *table(["system", "accuracy [95% CI]"],
                         [[system, interval(record)] for system, record in pooled.items()])]
    readers = document.get("readers", [])
    if readers:
        lines += ["### The trained readers", "",
                  *table(["reader", "LoRA", "examples", "oracle share", "steps", "trainable params",
                          "training s", "peak MB", "loss first → last"],
                         [[r["name"], num(r.get("lora")), num(r.get("examples")),
                           num(r.get("oracle_share")), num(r.get("steps")),
                           num(r.get("trainable_params")), num(r.get("train_seconds"), 0),
                           num(r.get("peak_memory_mb"), 0),
                           f"{num(r.get('first_loss'))} → {num(r.get('final_loss'))}"]
                          for r in readers])]
    return lines


def tasks_section(document: dict, figures: Path | None = None) -> list[str]:
    import pandas as pd

    from ragft_helpers import viz

    lines = ["## Notebook 07: sorting customer messages (task fine-tuning vs retrieval)", ""]
    rows = document.get("table", [])
    if rows:
        lines += ["### Every system on the test messages", "",
                  *table(["system", "macro-F1 [95% CI]", "accuracy [95% CI]",
                          "ms per message", "training s", "index s"],
                         [[r["system"],
                           interval(r, "macro_f1", "macro_f1_low", "macro_f1_high"),
                           interval(r, "accuracy", "accuracy_low", "accuracy_high"),
                           num(r.get("ms_per_message"), 0), num(r.get("train s"), 0),
                           num(r.get("index s"), 1)] for r in rows]),
                  *figure(figures, "tasks.png", "every system on the test messages",
                          lambda ax: viz.plot_task_scores(pd.DataFrame(rows).set_index("system"),
                                                          ax=ax))]
    curve = document.get("curve", [])
    if curve:
        systems = list(dict.fromkeys(r["system"] for r in curve))
        sizes = list(dict.fromkeys(r["per_label"] for r in curve))
        cells = {(r["per_label"], r["system"]): r for r in curve}
        lines += ["### Learning curve (macro-F1; training messages per intent)", "",
                  *table(["per intent", *systems],
                         [[num(size), *(num(cells[(size, s)]["macro_f1"], 3) if (size, s) in cells
                                        else "—" for s in systems)] for size in sizes]),
                  *figure(figures, "learning-curve.png", "learning curve",
                          lambda ax: viz.plot_learning_curve(pd.DataFrame(curve),
                                                             document.get("crossover"), ax=ax))]
    crossover = document.get("crossover")
    if crossover:
        lines += ["Where fine-tuning overtakes retrieval on the learning curve, as notebook 07 "
                  "computed it: " + ", ".join(f"{k} {num(v, 3)}" for k, v in crossover.items()) + ".",
                  ""]
    new_intent = document.get("new_intent", [])
    if new_intent:
        columns = [c for c in new_intent[0] if c != "system"]
        lines += ["### A new intent", "", *table(["system", *columns],
                                                  [[r["system"], *(num(r.get(c)) for c in columns)]
                                                   for r in new_intent])]
    runs = document.get("runs", {})
    if runs:
        lines += ["### The trained classifiers", "",
                  *table(["classifier", "training messages", "steps", "training s", "peak MB",
                          "loss first → last"],
                         [[kind, num(r.get("training_messages")), num(r.get("steps")),
                           num(r.get("train_seconds"), 0), num(r.get("peak_memory_mb"), 0),
                           f"{num(r.get('first_loss'))} → {num(r.get('final_loss'))}"]
                          for kind, r in runs.items()])]
    if not _missing(document.get("peak_memory_mb")):
        lines += [f"Peak memory the notebook measured (`peak_memory_mb`): "
                  f"{num(document['peak_memory_mb'], 0)} MB.", ""]
    return lines


SECTIONS = {"raft": raft_section, "tasks": tasks_section}


def build_page(profile: str, showdown: dict, showdown_path: Path,
               optional: dict[str, tuple[dict, Path]] | None = None,
               figures: Path | None = None) -> str:
    """The page: the showdown's sections, then each optional notebook's (``optional``: stem ->
    (document, path)), or how to produce a missing one; figures drawn into ``figures`` (a folder
    beside the page), none when it is None."""
    optional = optional or {}
    sources = ", ".join([f"`{showdown_path.name}` (notebook 08)",
                         *(f"`{path.name}` (notebook {OPTIONAL[stem][0]})"
                           for stem, (_, path) in optional.items())])
    lines = [f"# Expected results at the `{profile}` profile", "",
             f"Generated by `docs/make_results_page.py` from {sources}, the results the notebooks "
             f"saved when they ran (regenerate with `make results-page RESULTS_PROFILE={profile}`). "
             "They are one run's numbers on one machine: yours will differ within the intervals, "
             "and more where the machine differs. `ragft doctor` and notebook 08 compare a run "
             f"with the numbers in `results-{profile}.json` beside this page.", "",
             "## The run", "", *run_section(showdown, showdown_path, "Notebook 08")]
    for stem, (document, path) in optional.items():
        lines += run_section(document, path, f"Notebook {OPTIONAL[stem][0]}")
    lines += showdown_section(showdown, figures)
    for stem, (number, notebook) in OPTIONAL.items():
        if stem in optional:
            lines += SECTIONS[stem](optional[stem][0], figures)
        else:
            lines += [f"## Notebook {number}", "",
                      f"No `{stem}-{profile}.json` beside the showdown's file: run "
                      f"`{notebook}` at this profile with the same `RAGFT_CACHE_DIR` and "
                      "regenerate this page.", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_reference(path: Path, showdown: dict, optional: dict[str, tuple[dict, Path]]) -> None:
    """The numbers a student's run is compared with (``ragft doctor``, notebook 08):
    ``results.key_numbers`` of these results files, beside the page."""
    from ragft_helpers import results

    documents = {"showdown": showdown, **{stem: document for stem, (document, _) in optional.items()}}
    path.write_text(json.dumps({
        "profile": showdown.get("settings", {}).get("profile"), "saved_at": showdown.get("saved_at"),
        "versions": showdown.get("versions", {}), "numbers": results.key_numbers(documents)},
        indent=1), encoding="utf-8")


def default_results_dir(profile: str) -> Path:
    from ragft_helpers import results
    from ragft_helpers.config import get_profile, get_settings

    settings = replace(get_settings(), profile=get_profile(profile))
    return results.results_path(settings).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="laptop")
    parser.add_argument("--results-dir", type=Path,
                        help="where the results files are (default: RAGFT_CACHE_DIR/results)")
    parser.add_argument("--out", type=Path, help="default: docs/results-<profile>.md")
    args = parser.parse_args(argv)
    folder = args.results_dir or default_results_dir(args.profile)
    showdown_path = folder / f"{SHOWDOWN}-{args.profile}.json"
    if not showdown_path.is_file():
        print(how_to_produce(args.profile, showdown_path), file=sys.stderr)
        return 1
    showdown = json.loads(showdown_path.read_text(encoding="utf-8"))
    optional = {stem: (json.loads(path.read_text(encoding="utf-8")), path)
                for stem in OPTIONAL if (path := folder / f"{stem}-{args.profile}.json").is_file()}
    out = args.out or ROOT / "docs" / f"results-{args.profile}.md"
    write_reference(out.with_suffix(".json"), showdown, optional)
    figures = out.with_suffix("")  # docs/results-<profile>/ beside the page
    out.write_text(build_page(args.profile, showdown, showdown_path, optional, figures),
                   encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.json')} from " + ", ".join(str(p) for p in
                                           [showdown_path, *(path for _, path in optional.values())]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
