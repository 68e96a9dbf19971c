"""What this machine has, and how much of it a run uses: device, CPU threads, bf16, peak memory."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Sequence


def torch_device() -> str:
    """Where torch computes: "cuda", "mps" or "cpu"."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def device_description() -> str:
    """:func:`torch_device` with the GPU's name, e.g. ``cuda (NVIDIA A100)``."""
    import torch

    device = torch_device()
    return f"cuda ({torch.cuda.get_device_name(0)})" if device == "cuda" else device


def cpu_threads() -> int:
    """Threads for torch on the CPU: ``OMP_NUM_THREADS`` when set, else the cores this process may use."""
    configured = os.environ.get("OMP_NUM_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # precision names → torch dtypes


def matmul_gflops(size: int = 1024, repeats: int = 20, precision: str = "fp32") -> float:
    """Best GFLOP/s of ``torch.mm`` on two size × size matrices in ``precision`` ("fp32", "bf16"
    or "fp16") over ``repeats`` runs: the compute ceiling of a model's forward and backward."""
    import torch

    dtype = getattr(torch, DTYPES[precision])
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / min(seconds) / 1e9


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """The CPU computes in bfloat16 natively (AVX512-BF16 or AMX), per ``/proc/cpuinfo``'s flags.

    Elsewhere (no such flags, or not Linux) bf16 on the CPU is emulated and slower than fp32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 95)) -> dict[str, float]:
    """``{"p50": ..., "p95": ...}`` of ``values`` (NaN for an empty sample)."""
    import numpy as np

    data = np.asarray(list(values), dtype=float)
    return {f"p{point:g}": float(np.percentile(data, point)) if data.size else float("nan")
            for point in points}


def release_freed_memory() -> bool:
    """Return the memory of freed objects to the operating system; True when the C library did.

    Collects reference cycles first (a ``Trainer`` and its model, optimiser and callbacks hold
    some), then calls glibc's ``malloc_trim``. glibc keeps large freed blocks for reuse, so
    without it a process that trained a model stays near its training peak while it loads and
    runs the next models: notebook 06 at the smoke profile peaked at 8.1 GB while scoring after
    its readers trained, 6.3 GB (the training itself) with it. Elsewhere (another C library,
    macOS, Windows) only the collection runs.
    """
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # no glibc (e.g. musl)
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))


class PeakRSS:
    """Context manager sampling this process's resident memory; ``peak_mb`` after exit.

    On a CUDA device the peak allocated GPU memory is reported instead.
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def _sample(self):
        import psutil

        process = psutil.Process()
        while True:
            self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        import torch

        self._cuda = torch.cuda.is_available()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        self._stop.set()
        self._thread.join()
        if self._cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
