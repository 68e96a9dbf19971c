"""``ragft doctor``: what this machine has, which assets resolve and from where, what to fix."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from ragft_helpers import assets, hub, results, speed, wikitext
from ragft_helpers.config import ConfigError, Settings, ensure_writable_dir, get_settings
from ragft_helpers.machine import device_description, matmul_gflops, torch_device
from ragft_helpers.training import training_precision

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "sentence-transformers", "peft",
            "gguf", "chromadb", "bm25s", "jupyterlab", "ipywidgets", "matplotlib", "pandas", "nbval")

SQLITE_MINIMUM = (3, 35, 0)  # chromadb refuses to import with an older SQLite
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SLOW_MACHINE = 1.5  # times slower than the measuring machine at which the doctor gives advice
MEMORY_ADVICE_GB = 4.0  # the benchmarks' target for any one notebook's peak memory
# Every notebook and solution run once at `smoke` leaves 6.2 GB in RAGFT_CACHE_DIR: the converted
# model and ten copies of its weights at 0.5 GB each (the saved fine-tunes and the last checkpoint
# of three WikiText runs), five small classifiers; other profiles save the same models.
FIRST_RUN_CACHE_GB = 6.5
MIN_FREE_GB = 1.0  # a re-run still writes scores and the index
KERNEL_NAME = "ragft"  # the Jupyter kernel `make setup` registers ("Python (ragft)")
# The lock file of the embedded index (store.writer_lock_path, asserted equal by a test). Not
# imported from store: importing it imports chromadb, which fails on the SQLite checked here.
WRITER_LOCK = "chroma.ragft-writer.lock"


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


def _free_disk_gb(path: Path) -> float:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free / 2**30


def _folder_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**30


def cache_space_check(cache_dir: Path, free_gb: float, used_gb: float) -> Check:
    """Room for what the workbook still has to write: :data:`FIRST_RUN_CACHE_GB` less what the
    cache folder already holds (at least :data:`MIN_FREE_GB`)."""
    needed = max(MIN_FREE_GB, FIRST_RUN_CACHE_GB - used_gb)
    ok = free_gb >= needed
    return Check("cache folder", f"{cache_dir} ({used_gb:.1f} GB used, {free_gb:.1f} GB free)", ok,
                 "" if ok else f"every notebook together writes about {FIRST_RUN_CACHE_GB:g} GB there: free "
                 f"{needed - free_gb:.1f} GB more, or set RAGFT_CACHE_DIR to a disk with room")


def sqlite_check(version_info: tuple[int, ...] | None = None) -> Check:
    """Chroma's embedded index needs SQLite 3.35 or newer in the Python that runs it."""
    version_info = tuple(version_info or sqlite3.sqlite_version_info)
    ok = version_info >= SQLITE_MINIMUM
    return Check("sqlite", ".".join(map(str, version_info)), ok, "" if ok else (
        "Chroma needs SQLite >= 3.35 and refuses to start with this one. Use a Python built with a "
        "newer SQLite (python.org or conda Python, or a newer Linux release): make clean, then "
        "make lab PYTHON=/path/to/that/python3"))


def torch_build_check(version: str, cuda: str | None, gpu_visible: bool) -> Check:
    """A CUDA build of torch on a machine without a GPU works, but is several GB for nothing."""
    if cuda is None:
        return Check("torch build", f"{version}, CPU-only")
    value = f"{version}, CUDA {cuda}" + ("" if gpu_visible else " (no GPU visible)")
    return Check("torch build", value, True, "" if gpu_visible else (
        "this CUDA build runs on the CPU but takes several GB; for the CPU-only build: make clean, "
        "then make lab TORCH_PIP_ARGS=\"--index-url https://download.pytorch.org/whl/cpu\""))


def memory_check(total_gb: float, available_gb: float) -> Check:
    ok = available_gb >= MEMORY_ADVICE_GB
    return Check("memory", f"{total_gb:.1f} GB, {available_gb:.1f} GB available now", True,
                 "" if ok else "close programs and shut down kernels you no longer use (JupyterLab: "
                 "Kernel > Shut Down Kernel); docs/instructor-guide.md lists each notebook's "
                 "measured peak memory")


def _describe_process(pid: int) -> str:
    import psutil

    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return f"process {pid}"
    return f"a Jupyter kernel (pid {pid})" if "ipykernel" in command else f"pid {pid}: {command[:60]}"


def index_check(settings: Settings) -> Check:
    """Who holds the embedded index folder, or whether the RAGFT_CHROMA_URL server answers."""
    if settings.chroma_url:
        from ragft_helpers.server import heartbeat_status

        url = settings.chroma_url if "://" in settings.chroma_url else f"http://{settings.chroma_url}"
        if heartbeat_status(url, timeout=2.0) is None:
            return Check("index", f"server {settings.chroma_url} (RAGFT_CHROMA_URL) does not answer",
                         False, "start it with 'make chroma' (or 'ragft serve-index'), or unset "
                                "RAGFT_CHROMA_URL to use the embedded index")
        return Check("index", f"server {settings.chroma_url} (RAGFT_CHROMA_URL) answers")
    lock = settings.cache_dir / WRITER_LOCK
    try:
        import fcntl
    except ImportError:  # Windows: the helpers take no lock there
        return Check("index", f"{settings.cache_dir / 'chroma'} (open by other processes not checked)")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return Check("index", f"{settings.cache_dir / 'chroma'} (not open in any process)")
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return Check("index", f"{settings.cache_dir / 'chroma'} (not open in any process)")
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:  # file systems without flock support
        return Check("index", f"{settings.cache_dir / 'chroma'} (open by other processes not checked)")
    finally:
        os.close(fd)
    if holder == str(os.getpid()):
        return Check("index", f"{settings.cache_dir / 'chroma'} (open in this process)")
    who = _describe_process(int(holder)) if holder.isdigit() else "another process"
    return Check("index", f"{settings.cache_dir / 'chroma'} is open in {who}", True,
                 "a second kernel or script that writes the index gets a ConcurrentWriterWarning "
                 "and can corrupt it: stop that kernel or script if you are done with it (JupyterLab: "
                 "Kernel > Shut Down Kernel), or share one server (make chroma, RAGFT_CHROMA_URL)")


def kernel_check(executable: str | None = None, specs: dict[str, str] | None = None) -> Check:
    """The Jupyter kernel "Python (ragft)" exists and runs this environment's Python."""
    executable = executable or sys.executable
    register = (f"register it: {executable} -m ipykernel install --sys-prefix --name {KERNEL_NAME} "
                '--display-name "Python (ragft)"')
    if specs is None:
        try:
            from jupyter_client.kernelspec import KernelSpecManager

            specs = KernelSpecManager().find_kernel_specs()
        except Exception:  # noqa: BLE001 - jupyter missing or misconfigured: say so, do not crash
            specs = {}
    folder = specs.get(KERNEL_NAME)
    if folder is None:
        return Check("jupyter kernel", "'Python (ragft)' is not registered", True, register)
    try:
        argv = json.loads((Path(folder) / "kernel.json").read_text(encoding="utf-8"))["argv"]
        runs = argv[0]
    except (OSError, ValueError, KeyError, IndexError):
        return Check("jupyter kernel", f"'Python (ragft)' in {folder} is unreadable", True, register)
    # The same environment: the same bin folder (symlinks not followed, since every virtual
    # environment's python links to the same system interpreter).
    same = os.path.isabs(runs) and (os.path.dirname(os.path.abspath(runs))
                                    == os.path.dirname(os.path.abspath(executable)))
    return Check("jupyter kernel", f"'Python (ragft)' runs {runs}", True,
                 "" if same else f"this is not the Python running these checks ({executable}); "
                 + register)


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
    import psutil
    import torch

    status = hub.status()
    memory = psutil.virtual_memory()
    checks = [
        Check("python", f"{platform.python_version()} ({sys.executable})"),
        kernel_check(),
        *_package_checks(),
        sqlite_check(),
        torch_build_check(torch.__version__, torch.version.cuda, torch.cuda.is_available()),
        Check("device", device_description()),
        Check("cpu cores", str(os.cpu_count())),
        memory_check(memory.total / 2**30, memory.available / 2**30),
        Check("profile", f"{settings.profile.name}: {settings.profile.description}"),
        Check("seed", str(settings.seed)),
        Check("hugging face hub", "reachable" if status.reachable else f"offline — {status.reason}"),
    ]
    try:
        ensure_writable_dir(settings.cache_dir)
        checks.append(cache_space_check(settings.cache_dir, _free_disk_gb(settings.cache_dir),
                                        _folder_gb(settings.cache_dir)))
    except ConfigError as err:
        checks.append(Check("cache folder", str(settings.cache_dir), False, str(err)))
    checks.append(index_check(settings))
    checks.extend(_asset_checks(settings))
    checks.append(speed_check(settings))
    checks.append(reference_check(settings))
    return checks


def _duration(minutes: float) -> str:
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _span(low: float, high: float) -> str:
    shorter, longer = _duration(low), _duration(high)
    return shorter if shorter == longer else f"{shorter} to {longer}"


def speed_check(settings: Settings, *, fp32_gflops: float | None = None,
                training_gflops: float | None = None, precision: str | None = None,
                results_dir: Path | None = None) -> Check:
    """This CPU's matmul speed against the machine the workbook's times were measured on, and the
    profile's whole workbook scaled to it (:func:`ragft_helpers.speed.estimate`). The measurement
    takes about a second; the keyword arguments replace it and where the run is read."""
    if torch_device() != "cpu":
        return Check("machine speed", f"{device_description()}: the run times of the 2-core CPU "
                                      "they were measured on do not apply")
    precision = precision or training_precision(settings)
    fp32_gflops = fp32_gflops or matmul_gflops(repeats=10)
    if training_gflops is None:
        training_gflops = (fp32_gflops if precision == "fp32" else
                           matmul_gflops(repeats=10, precision=precision))
    here = (f"fp32 matmul {fp32_gflops:.0f} GFLOP/s, training in {precision} "
            f"({training_gflops:.0f} GFLOP/s)")
    reference = speed.reference_run(settings.profile.name, results_dir)
    if reference is None:
        return Check("machine speed", f"{here}; no measured run of profile "
                                      f"'{settings.profile.name}' to compare with")
    found = speed.estimate(reference, fp32_gflops, precision, training_gflops)
    value = (f"{here}; the measuring machine: fp32 {reference.rates['fp32']:.0f}, training in "
             f"{reference.precision} ({reference.rates[reference.precision]:.0f}) → inference "
             f"{found.inference:.1f}×, training {found.training:.1f}× its time; profile "
             f"'{settings.profile.name}' took {_duration(reference.minutes)} there "
             f"({reference.source.name}): about {_span(found.low_minutes, found.high_minutes)} here")
    notebooks = len(list(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
    if reference.notebooks < notebooks:
        value += f" (that run has {reference.notebooks} of today's {notebooks} notebooks: more)"
    fix = ""
    if min(found.inference, found.training) >= SLOW_MACHINE:
        smoke = "" if settings.profile.name == "smoke" else "the smoke profile (RAGFT_PROFILE=smoke), "
        fix = ("the workbook's times were measured on a faster CPU: plan for the estimate here, or "
               f"use {smoke}a CPU with native bf16 (AVX512-BF16 or AMX) or a GPU")
    return Check("machine speed", value, True, fix)


def reference_check(settings: Settings, results_dir: Path | None = None,
                    reference_dir: Path | None = None) -> Check:
    """How this profile's saved run compares with the project's reference run
    (:func:`ragft_helpers.results.reference_summary`)."""
    line, expected = results.reference_summary(settings, results_dir, reference_dir)
    return Check("results vs reference", line, True, "" if expected else (
        f"compare with docs/results-{settings.profile.name}.md; far from the reference usually means "
        "another model (RAGFT_MODEL) or changed settings; the seed alone moves numbers within the "
        "intervals"))


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
