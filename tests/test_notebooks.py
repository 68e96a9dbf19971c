"""Notebook hygiene: built from their sources, stored without outputs, the same chapter shape;
every notebook has a solution notebook in notebooks/solutions/, held to the same rules."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
SUFFIX = "_solutions"

import sys  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from py2nb import cells_from_script  # noqa: E402


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_name_is_numbered_and_lowercase(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name)


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.name)
def test_stored_without_outputs_and_without_empty_cells(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        assert cell.source.strip(), "empty cell"
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "outputs are stripped"


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.name)
def test_matches_its_source_script(path):
    source = path.parent / "src" / (path.stem + ".py")
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ends_with_a_questionnaire(path):
    """fastbook-style: a few questions after the exercises; the solutions answer them."""
    prose = _markdown(path)[-1]
    assert "## Questionnaire" in prose, f"{path.name} does not end with a questionnaire"
    questions = re.findall(r"^\d+\. ", prose.split("## Questionnaire", 1)[1], re.M)
    assert len(questions) >= 3, f"{path.name}: {len(questions)} questionnaire questions"


# ---- solutions -----------------------------------------------------------------------------------

def _markdown(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


def test_every_notebook_has_a_solution_and_every_solution_a_notebook():
    assert {p.stem for p in NOTEBOOKS} == {p.stem.removesuffix(SUFFIX) for p in SOLUTIONS}
    sources = sorted(p.stem for p in (ROOT / "notebooks" / "solutions" / "src").glob("*.py"))
    assert sources == [p.stem for p in SOLUTIONS], "each solution notebook is built from one source"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_names_its_notebook_and_checks_and_answers(path):
    assert re.fullmatch(rf"\d\d_[a-z0-9_]+{SUFFIX}\.ipynb", path.name)
    solved = ROOT / "notebooks" / (path.stem.removesuffix(SUFFIX) + ".ipynb")
    title = nbformat.read(solved, as_version=4).cells[0].source.splitlines()[0]
    prose = _markdown(path)
    assert prose[0].splitlines()[0].startswith(title), f"the first line names {solved.name}: {title!r}"
    assert f"({solved.relative_to(ROOT / 'notebooks').as_posix()})" in prose[0].replace("../", "")
    assert prose[-1].startswith("## Questionnaire answers"), "it ends with the questionnaire answers"
    exercises = len(re.findall(r"^# (\d+)\. ", _exercise_list(solved), re.M))
    answered = sum(bool(re.match(r"## Exercise \d+ ", text)) for text in prose)
    assert exercises and answered == exercises, f"{answered} exercises solved of {exercises}"
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert len(re.findall(r"^\s*assert ", code, re.M)) >= exercises, "checkpoints for the exercises"


def _exercise_list(notebook) -> str:
    """The numbered list under "## Exercises" of ``notebook``, as lines prefixed with "# "."""
    prose = "\n".join(_markdown(notebook))
    after = prose.split("## Exercises", 1)[1].split("## Questionnaire", 1)[0]
    return "\n".join("# " + line for line in after.splitlines())


def test_solutions_are_collected_after_every_notebook():
    """`make test` runs `pytest tests notebooks`: solutions reuse the caches the notebooks fill."""
    order = sorted([p.name for p in (ROOT / "notebooks").iterdir()])
    position = {name: n for n, name in enumerate(order)}
    assert all(position["solutions"] > position[p.name] for p in NOTEBOOKS)
