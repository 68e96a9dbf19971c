"""Results on disk: one JSON file per notebook and profile, with the settings, provenance and
package versions needed to redraw a figure without re-running."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Sequence


def package_versions(names: Sequence[str] = ("torch", "transformers", "peft", "chromadb",
                                             "datasets", "numpy", "pandas")) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def results_path(settings, results_dir: Path | None = None, stem: str = "showdown") -> Path:
    """``<results_dir or RAGFT_CACHE_DIR/results>/<stem>-<profile>.json``: one file per profile."""
    folder = Path(results_dir) if results_dir is not None else settings.cache_dir / "results"
    return folder / f"{stem}-{settings.profile.name}.json"


def save_results(payload: dict, settings, *, provenance: Sequence = (),
                 results_dir: Path | None = None, stem: str = "showdown") -> Path:
    """Write ``payload`` (JSON-ready: tables as lists of records) with the settings, profile,
    model provenance and package versions, so a figure can be redrawn without re-running."""
    path = results_path(settings, results_dir, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "settings": {"profile": settings.profile.name, "seed": settings.seed,
                     "model": settings.model, "cache_dir": str(settings.cache_dir)},
        "profile": asdict(settings.profile),
        "provenance": [asdict(p) if is_dataclass(p) else p for p in provenance],
        "versions": package_versions(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, default=_jsonable), encoding="utf-8")
    return path


def _jsonable(value):
    import pandas as pd

    if value is pd.NA:
        return None
    if hasattr(value, "to_dict"):
        return value.to_dict(orient="records")
    if hasattr(value, "item"):
        return value.item()
    if is_dataclass(value):
        return asdict(value)
    return str(value)


def load_results(settings, results_dir: Path | None = None, stem: str = "showdown") -> dict:
    """The document written by :func:`save_results` for this profile."""
    path = results_path(settings, results_dir, stem)
    if not path.is_file():
        raise FileNotFoundError(f"No results at {path}: run notebook {NOTEBOOKS.get(stem, '08')} "
                                "first (same RAGFT_CACHE_DIR and RAGFT_PROFILE).")
    return json.loads(path.read_text(encoding="utf-8"))


# ---- a run against the reference run -----------------------------------------------------------

# The reference run's numbers per profile, written by docs/make_results_page.py beside its page.
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "docs"
# The results files compared, by stem, and the notebook that saves each.
NOTEBOOKS = {"showdown": "08", "raft": "06", "tasks": "07"}


def reference_path(profile: str, reference_dir: Path | None = None) -> Path:
    return Path(reference_dir or REFERENCE_DIR) / f"results-{profile}.json"


def _number(notebook: str, system: str, metric: str, value, low=None, high=None, n=None) -> dict:
    return {"notebook": notebook, "system": system, "metric": metric, "value": value,
            "low": low, "high": high, "n": n}


def key_numbers(documents: dict[str, dict]) -> list[dict]:
    """The numbers a run is compared on, from its saved results (stem -> document, as
    :func:`load_results` reads them): every system's accuracies in notebook 08 and on its updated
    questions, the RAFT readers' pooled free-form accuracy (06), and each task system's macro-F1
    (07); each with its 95% interval where the notebook computed one."""
    numbers = []
    showdown = documents.get("showdown") or {}
    for r in showdown.get("accuracy", []):
        numbers.append(_number("08", r["system"], r["metric"], r["value"], r.get("low"), r.get("high"), r.get("n")))
    for r in showdown.get("freshness", []):
        numbers.append(_number("08", r["system"], "updated questions, multiple choice",
                               r.get("multiple choice", r.get("value")), r.get("low"), r.get("high"), r.get("n")))
    for system, r in (documents.get("raft") or {}).get("pooled", {}).items():
        numbers.append(_number("06", system, "free-form, both phrasings", r["value"], r.get("low"),
                               r.get("high"), r.get("n")))
    for r in (documents.get("tasks") or {}).get("table", []):
        numbers.append(_number("07", r["system"], "macro-F1", r["macro_f1"], r.get("macro_f1_low"),
                               r.get("macro_f1_high"), r.get("n")))
    return numbers


def load_reference(profile: str, reference_dir: Path | None = None) -> dict | None:
    """The reference run's document for ``profile`` (``docs/results-<profile>.json``: its
    ``numbers``, ``saved_at`` and machine), or None when the project has none for it."""
    path = reference_path(profile, reference_dir)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def saved_documents(settings, results_dir: Path | None = None) -> dict[str, dict]:
    """This profile's saved results (stem -> document) of the notebooks that have run with the same
    seed and model as ``settings``. A document from another seed or model is left out, and a line
    says which notebook to run again."""
    found = {}
    for stem in NOTEBOOKS:
        try:
            document = load_results(settings, results_dir, stem)
        except FileNotFoundError:
            continue
        ran = document.get("settings", {})
        if (ran.get("seed"), ran.get("model")) != (settings.seed, settings.model):
            print(f"Results of notebook {NOTEBOOKS[stem]} left out: they ran with seed {ran.get('seed')} "
                  f"and model {ran.get('model')}, not seed {settings.seed} and model {settings.model}. "
                  f"Run notebook {NOTEBOOKS[stem]} with these settings to use them.")
            continue
        found[stem] = document
    return found


def _missing(value) -> bool:
    """No number: None, or NaN (a metric with no questions behind it)."""
    return value is None or value != value


def compare_with_reference(numbers: list[dict], reference: dict):
    """One row per number this run shares with the reference run: this run's value, the
    reference's value and 95% interval, and ``verdict``: "as expected" when this run's value lies
    in the reference's interval, else "higher than expected" or "lower than expected"."""
    import pandas as pd

    known = {(r["notebook"], r["system"], r["metric"]): r for r in reference.get("numbers", [])}
    rows = []
    for number in numbers:
        ref = known.get((number["notebook"], number["system"], number["metric"]))
        if ref is None or _missing(number["value"]) or _missing(ref["value"]):
            continue
        low = ref["low"] if ref.get("low") is not None else ref["value"]
        high = ref["high"] if ref.get("high") is not None else ref["value"]
        value = number["value"]
        verdict = ("as expected" if low - 1e-9 <= value <= high + 1e-9
                   else "higher than expected" if value > high else "lower than expected")
        rows.append({"notebook": number["notebook"], "system": number["system"],
                     "metric": number["metric"], "this run": round(value, 3),
                     "reference": round(ref["value"], 3),
                     "reference interval": f"[{low:.2f}, {high:.2f}]", "verdict": verdict})
    return pd.DataFrame(rows, columns=["notebook", "system", "metric", "this run", "reference",
                                       "reference interval", "verdict"])


def reference_summary(settings, results_dir: Path | None = None,
                      reference_dir: Path | None = None) -> tuple[str, bool]:
    """(one line for ``ragft doctor``, whether every compared number is as expected): how this
    profile's saved run compares with the project's reference run."""
    profile = settings.profile.name
    reference = load_reference(profile, reference_dir)
    if reference is None:
        return f"no reference run for profile '{profile}' in {REFERENCE_DIR.name}/", True
    documents = saved_documents(settings, results_dir)
    if not documents:
        return (f"no saved run at profile '{profile}' yet (notebooks 06, 07 and 08 save one); "
                f"reference from {reference.get('saved_at', '?')}"), True
    table = compare_with_reference(key_numbers(documents), reference)
    off = table[table["verdict"] != "as expected"]
    line = (f"{len(table) - len(off)} of {len(table)} numbers of notebooks "
            f"{', '.join(NOTEBOOKS[s] for s in documents)} within the reference run's intervals "
            f"(docs/results-{profile}.md)")
    if len(off):
        line += "; outside: " + "; ".join(
            f"{r['system']} {r['metric']} {r['this run']:.2f} (reference {r['reference']:.2f})"
            for r in off.head(3).to_dict("records")) + ("; …" if len(off) > 3 else "")
    return line, off.empty
