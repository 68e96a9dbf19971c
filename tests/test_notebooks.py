"""Notebook hygiene: built from their sources, stored without outputs, the same chapter shape."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

import sys  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from py2nb import cells_from_script  # noqa: E402


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_name_is_numbered_and_lowercase(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs_and_without_empty_cells(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        assert cell.source.strip(), "empty cell"
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "outputs are stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_matches_its_source_script(path):
    source = ROOT / "notebooks" / "src" / (path.stem + ".py")
    assert source.is_file(), f"{source} is the editable source of {path.name}"
    expected = [(c.cell_type, c.source) for c in cells_from_script(source.read_text())]
    actual = [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]
    assert actual == expected, f"rebuild: python tools/py2nb.py {source.relative_to(ROOT)} " \
                               f"{path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_has_goals_summary_exercises_and_checkpoints(path):
    notebook = nbformat.read(path, as_version=4)
    prose = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    for heading in ("Learning goals", "Summary", "Exercises"):
        assert heading in prose, f"{path.name} lacks '{heading}'"
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert re.search(r"^\s*assert ", code, re.M), "checkpoint asserts make nbval fail on wrong results"
