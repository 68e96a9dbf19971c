"""The doctor's checks for the problems students hit most: SQLite, torch build, memory, the index
lock, the Chroma server and the Jupyter kernel."""
import json
import subprocess
import sys
import textwrap

import pytest

from ragft_helpers import doctor
from ragft_helpers.config import get_settings


def test_sqlite_older_than_chroma_needs_is_a_problem_with_a_fix():
    old = doctor.sqlite_check((3, 31, 1))
    assert not old.ok and "3.35" in old.fix and "PYTHON=" in old.fix
    assert doctor.sqlite_check((3, 35, 0)).ok
    assert doctor.sqlite_check().ok  # this environment's SQLite runs Chroma


def test_a_cuda_torch_without_a_gpu_gets_the_cpu_index():
    check = doctor.torch_build_check("2.13.0", "12.8", gpu_visible=False)
    assert check.ok and "no GPU visible" in check.value
    assert "download.pytorch.org/whl/cpu" in check.fix
    assert not doctor.torch_build_check("2.13.0", "12.8", gpu_visible=True).fix
    assert doctor.torch_build_check("2.13.0+cpu", None, gpu_visible=False).value == "2.13.0+cpu, CPU-only"


def test_the_cache_folder_needs_room_for_what_is_still_to_be_written(tmp_path):
    first_run = doctor.FIRST_RUN_CACHE_GB
    empty = doctor.cache_space_check(tmp_path, free_gb=first_run - 1, used_gb=0.0)
    assert not empty.ok and "free 1.0 GB more" in empty.fix and "RAGFT_CACHE_DIR" in empty.fix
    assert doctor.cache_space_check(tmp_path, free_gb=first_run + 0.1, used_gb=0.0).ok
    # A folder that already holds the first run's models needs room only for scores.
    assert doctor.cache_space_check(tmp_path, free_gb=doctor.MIN_FREE_GB, used_gb=first_run).ok
    assert not doctor.cache_space_check(tmp_path, free_gb=doctor.MIN_FREE_GB / 2, used_gb=first_run).ok


def test_little_free_memory_is_advice_not_a_failure():
    low = doctor.memory_check(8.0, 2.0)
    assert low.ok and "Shut Down Kernel" in low.fix and "2.0 GB available" in low.value
    assert not doctor.memory_check(24.0, 18.0).fix


def test_the_lock_file_is_the_one_the_store_takes(tmp_path):
    from ragft_helpers import store

    settings = get_settings({"RAGFT_CACHE_DIR": str(tmp_path)})
    assert store.writer_lock_path(settings) == settings.cache_dir / doctor.WRITER_LOCK


def test_index_held_by_another_process_is_reported_with_its_pid(tmp_path):
    settings = get_settings({"RAGFT_CACHE_DIR": str(tmp_path)})
    assert "not open in any process" in doctor.index_check(settings).value
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(tmp_path / doctor.WRITER_LOCK)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, f"{{os.getpid()}}\\n".encode(), 0)
        print("locked", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        check = doctor.index_check(settings)
        assert check.ok and f"pid {holder.pid}" in check.value
        assert "make chroma" in check.fix
    finally:
        holder.kill()
        holder.wait()
    assert "not open in any process" in doctor.index_check(settings).value


def test_a_chroma_server_that_does_not_answer_is_a_problem(tmp_path):
    settings = get_settings({"RAGFT_CACHE_DIR": str(tmp_path), "RAGFT_CHROMA_URL": "http://127.0.0.1:9"})
    check = doctor.index_check(settings)
    assert not check.ok and "make chroma" in check.fix


@pytest.mark.parametrize("registered, advice", [("same", False), ("other", True), (None, True)])
def test_the_ragft_kernel_runs_this_python(tmp_path, registered, advice):
    specs = {}
    if registered:
        folder = tmp_path / "ragft"
        folder.mkdir()
        runs = sys.executable if registered == "same" else "/elsewhere/bin/python"
        (folder / "kernel.json").write_text(json.dumps({"argv": [runs, "-m", "ipykernel_launcher"]}))
        specs = {"ragft": str(folder)}
    check = doctor.kernel_check(sys.executable, specs)
    assert check.ok and bool(check.fix) == advice
    if advice:
        assert "ipykernel install" in check.fix
