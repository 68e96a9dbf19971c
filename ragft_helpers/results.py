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
        raise FileNotFoundError(f"No results at {path}: run notebook 08 (the showdown) first (same "
                                "RAGFT_CACHE_DIR and RAGFT_PROFILE).")
    return json.loads(path.read_text(encoding="utf-8"))
