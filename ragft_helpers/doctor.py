"""``ragft doctor``: what this machine has, which assets resolve and from where, what to fix."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from ragft_helpers import assets, hub, wikitext
from ragft_helpers.config import ConfigError, Settings, ensure_writable_dir, get_settings
from ragft_helpers.machine import device_description

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "sentence-transformers", "peft",
            "gguf", "chromadb", "bm25s", "jupyterlab", "ipywidgets", "matplotlib", "pandas", "nbval")

BENCHMARK_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@dataclass(frozen=True)
class Check:
    item: str
    value: str
    ok: bool = True
    fix: str = ""


def _package_checks() -> list[Check]:
    checks = []
    for name in PACKAGES:
        try:
            checks.append(Check(name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(name, "missing", False, "run 'make lab' (or pip install -e .)"))
    return checks


def _memory_gb() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


def _free_disk_gb(path: Path) -> float:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free / 2**30


def _asset_checks(settings: Settings) -> list[Check]:
    checks = []
    try:
        candidates, _ = assets.causal_lm_candidates(settings)
        first = candidates[0]
        state = ""
        if first.gguf_file is not None:
            converted = (Path(first.location) / "config.json").is_file()
            state = " [converted copy cached]" if converted else " [converted once, on first use]"
        checks.append(Check("language model", first.provenance("model").line() + state))
    except assets.AssetError as err:
        checks.append(Check("language model", "none", False, str(err)))
    try:
        candidate = assets.embedding_candidates()[0][0]
        checks.append(Check("embedding model", candidate.provenance("embedding").line()))
    except assets.AssetError as err:
        checks.append(Check("embedding model", "none", False, str(err)))
    try:
        checks.append(Check("wikitext", wikitext.describe_source(settings)))
    except wikitext.WikiTextError as err:
        checks.append(Check("wikitext", "invalid", False, str(err)))
    return checks


def run_checks(settings: Settings | None = None) -> list[Check]:
    """Every check of ``ragft doctor``, in display order."""
    try:
        settings = settings or get_settings()
    except ConfigError as err:
        return [Check("settings", "invalid", False, str(err))]
    status = hub.status()
    checks = [
        Check("python", platform.python_version()),
        *_package_checks(),
        Check("device", device_description()),
        Check("cpu cores", str(os.cpu_count())),
        Check("memory", f"{_memory_gb():.1f} GB"),
        Check("profile", f"{settings.profile.name}: {settings.profile.description}"),
        Check("seed", str(settings.seed)),
        Check("hugging face hub", "reachable" if status.reachable else f"offline — {status.reason}"),
    ]
    try:
        ensure_writable_dir(settings.cache_dir)
        free = _free_disk_gb(settings.cache_dir)
        ok = free >= 2.0
        checks.append(Check("cache folder", f"{settings.cache_dir} ({free:.1f} GB free)", ok,
                            "" if ok else "free 2 GB there or set RAGFT_CACHE_DIR elsewhere"))
    except ConfigError as err:
        checks.append(Check("cache folder", str(settings.cache_dir), False, str(err)))
    checks.extend(_asset_checks(settings))
    measured = BENCHMARK_RESULTS / f"notebooks-{settings.profile.name}.md"
    checks.append(Check("expected runtime", f"per notebook on a 2-core CPU: {measured}"
                        if measured.is_file() else
                        f"not measured for profile '{settings.profile.name}'"))
    return checks


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.item) for c in checks)
    lines = []
    for check in checks:
        mark = "ok " if check.ok else "FIX"
        lines.append(f"[{mark}] {check.item.ljust(width)}  {check.value}")
        if check.fix:
            lines.append(f"      {' ' * width}  → {check.fix}")
    return "\n".join(lines)


def checks_frame(checks: list[Check]):
    import pandas as pd

    return pd.DataFrame([{"check": c.item, "value": c.value, "ok": c.ok, "fix": c.fix}
                         for c in checks])
