"""The doctor's checks for the problems students hit most: SQLite, torch build, memory, the index
lock, the Chroma server, the Jupyter kernel and a CPU slower than the one the times come from."""
import json
import subprocess
import sys
import textwrap

import pytest

from ragft_helpers import doctor
from ragft_helpers.config import get_settings
from tests.recorded_runs import recorded_run


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


def test_a_cpu_without_native_bf16_is_told_how_much_longer_the_workbook_takes(tmp_path):
    settings = get_settings({"RAGFT_PROFILE": "laptop"})
    slow = doctor.speed_check(settings, fp32_gflops=65.0, precision="fp32",
                              results_dir=recorded_run(tmp_path))
    # inference 202.1 / 65 = 3.1×; training: fp32 at 202.1 / 65, and the Trainer trained 249 / 184
    # times faster in bf16 than in fp32 there: 4.2×. 101.8 min there is 5.3 to 7.1 h here.
    assert "inference 3.1×, training 4.2×" in slow.value and "5.3 h to 7.1 h here" in slow.value
    assert slow.ok and "RAGFT_PROFILE=smoke" in slow.fix and "AVX512-BF16" in slow.fix
    assert "2 of today's" in slow.value  # the recorded run lacks the newer notebooks
    same = doctor.speed_check(settings, fp32_gflops=202.1, training_gflops=446.1, precision="bf16",
                              results_dir=recorded_run(tmp_path))
    assert "1.0×" in same.value and "about 1.7 h here" in same.value and not same.fix
    alone = doctor.speed_check(settings, fp32_gflops=65.0, precision="fp32",
                               results_dir=tmp_path / "nothing")
    assert "65 GFLOP/s" in alone.value and "no measured run" in alone.value
    smoke = doctor.speed_check(get_settings({"RAGFT_PROFILE": "smoke"}), fp32_gflops=65.0,
                               precision="fp32", results_dir=recorded_run(tmp_path))
    assert "no measured run of profile 'smoke'" in smoke.value  # only laptop was recorded
    assert doctor.speed_check(settings).value.startswith("fp32 matmul")  # measured here


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
