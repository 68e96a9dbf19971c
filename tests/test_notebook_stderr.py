"""The notebooks' stderr rule (notebooks/conftest.py): a cell that shows a warning fails."""
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / "conftest.py", folder / "conftest.py")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbformat.write(notebook, folder / "cell.ipynb")
    return subprocess.run([sys.executable, "-m", "pytest", "cell.ipynb", "--nbval-lax",
                           "--nbval-current-env", "-p", "no:cacheprovider", "-q"],
                          cwd=folder, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("code", [
    "import warnings\nwarnings.warn('old API', FutureWarning)",
    "import sys\nprint('Traceback (most recent call last):', file=sys.stderr)",
])
def test_a_cell_that_shows_a_warning_or_traceback_fails(tmp_path, code):
    run = run_notebook(tmp_path, code)
    assert run.returncode != 0, run.stdout
    assert "what a student should not see" in run.stdout


def test_progress_bars_and_plain_output_pass(tmp_path):
    run = run_notebook(tmp_path, "import sys\nprint('Loading weights: 100%', file=sys.stderr)\n"
                                 "print('UserWarning is a class name, said on stdout')")
    assert run.returncode == 0, run.stdout
