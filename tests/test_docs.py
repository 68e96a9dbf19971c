"""The generated run-time tables of README.md and docs/instructor-guide.md (docs/make_docs.py)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import make_docs  # noqa: E402


def test_committed_tables_are_regenerated_identically_from_the_committed_results():
    stale = [path.relative_to(ROOT).as_posix()
             for path, (current, fresh) in make_docs.regenerate().items() if current != fresh]
    assert not stale, f"{stale} differ from benchmarks/results/: run `make docs`"


def test_every_target_has_its_generated_blocks():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    guide = (ROOT / "docs" / "instructor-guide.md").read_text(encoding="utf-8")
    assert "<!-- BEGIN GENERATED notebooks" in readme
    for name in ("measurements", "fill-3h", "fill-day"):
        assert f"<!-- BEGIN GENERATED {name}" in guide


def test_profiles_are_the_configured_ones():
    from ragft_helpers.config import PROFILES

    assert make_docs.PROFILES == tuple(PROFILES)


# ---- on a synthetic repository ---------------------------------------------------------------

def _notebook(folder: Path, name: str, title: str) -> None:
    cell = {"cell_type": "markdown", "metadata": {}, "source": [f"# {name[:2]} · {title}\n", "\n", "text"]}
    (folder / f"{name}.ipynb").write_text(json.dumps({"cells": [cell], "metadata": {},
                                                     "nbformat": 4, "nbformat_minor": 5}))


def _bench(profile: str, rows: list[tuple[str, float, float, str]], numbers: str = "") -> str:
    return "\n".join([
        f"# Notebooks at the `{profile}` profile", "",
        f"`python benchmarks/bench_notebooks.py --profile {profile}{' ' + numbers if numbers else ''}`", "",
        "2 cores, 8 GB RAM, x86_64, Python 3.11.7; WikiText from the default chain.", "",
        "| notebook | minutes | peak RSS (GB) | result |", "| --- | ---: | ---: | --- |",
        *(f"| {name}.ipynb | {minutes:.1f} | {peak:.2f} | {result} |" for name, minutes, peak, result in rows),
        "| **total** | **9.9** | **9.99** (max) | |", ""])


SEEDS = """# Notebook 03's checkpoints over seeds, `smoke` profile

`python benchmarks/bench_tasks.py --profile smoke --seeds 1 2` — each seed runs the notebook.

| seed | best | notebook | minutes | peak GB |
| --- | --- | --- | ---: | ---: |
| 1 | x | passed | 2.0 | 1.50 |
| 2 | y | passed | 3.0 | 1.75 |
| 3 | z | failed | 9.0 | 9.00 |
"""


@pytest.fixture
def repo(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name, title in [("01_alpha", "Alpha"), ("02_beta", "Beta"), ("03_gamma", "Gamma"),
                        ("05_showdown", "The showdown")]:
        _notebook(notebooks, name, title)
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    # The whole-workbook file wins over a file of one notebook; 05 was measured as 04 (renumbered);
    # a failed row counts as not measured.
    (results / "notebooks-laptop.md").write_text(_bench("laptop", [
        ("01_alpha", 1.0, 1.25, "ok"), ("02_beta", 5.0, 2.5, "failed (1)"),
        ("04_showdown", 10.0, 3.0, "ok"), ("09_removed", 99.0, 9.0, "ok")]))
    (results / "notebooks-laptop-01-02.md").write_text(_bench("laptop", [
        ("01_alpha", 7.0, 7.0, "ok"), ("02_beta", 4.0, 2.0, "ok")], "01 02"))
    (results / "tasks-smoke-seeds.md").write_text(SEEDS)
    return tmp_path


def test_measurements_follow_the_documented_precedence(repo):
    notebooks = make_docs.find_notebooks(repo)
    assert [nb.title for nb in notebooks] == ["Alpha", "Beta", "Gamma", "The showdown"]
    measured, sources = make_docs.load_measurements(notebooks, repo)
    assert measured[("laptop", "01_alpha")].minutes == (1.0,)  # the whole workbook first
    assert measured[("laptop", "02_beta")].minutes == (4.0,)  # failed there: the partial file
    assert measured[("laptop", "05_showdown")].measured_as == "04_showdown.ipynb"
    assert ("laptop", "03_gamma") not in measured
    seeds = measured[("smoke", "03_gamma")]
    assert seeds.minutes == (2.0, 3.0) and seeds.peak_gb == 1.75  # the failed seed is left out
    assert [s.path for s in sources] == ["benchmarks/results/tasks-smoke-seeds.md",
                                         "benchmarks/results/notebooks-laptop.md",
                                         "benchmarks/results/notebooks-laptop-01-02.md"]


def test_render_fills_every_kind_of_block_and_is_stable(repo):
    notebooks = make_docs.find_notebooks(repo)
    measured, sources = make_docs.load_measurements(notebooks, repo)
    text = "\n".join([
        "intro",
        "<!-- BEGIN GENERATED notebooks -->",
        "| notebook | what you learn and build | laptop run time |",
        "| --- | --- | ---: |",
        "| [01 · Alpha](notebooks/01_alpha.ipynb) | Typed by hand. | old |",
        "<!-- END GENERATED notebooks -->",
        "<!-- BEGIN GENERATED measurements -->",
        "<!-- END GENERATED measurements -->",
        "<!-- BEGIN GENERATED fill-plan (hand-written) -->",
        "| time | notebook | what | `laptop` minutes | `smoke` minutes |",
        "| --- | --- | --- | ---: | ---: |",
        "| 9:00 | 01, 02 | two at once | | |",
        "| 9:30 | — | break | 1.0 | |",
        "| 9:45 | 03 | seeds | | |",
        "<!-- END GENERATED fill-plan -->",
        "outro", ""])
    out = make_docs.render(text, notebooks, measured, sources)
    assert make_docs.render(out, notebooks, measured, sources) == out
    assert "| [01 · Alpha](notebooks/01_alpha.ipynb) | Typed by hand. | 1.0 min |" in out
    assert "| [03 · Gamma](notebooks/03_gamma.ipynb) | Gamma | not measured |" in out  # new row: its title
    assert "Together about 15.0 minutes of computing at the `laptop` profile (not counting 03" in out
    assert "| 03 Gamma | 2.0–3.0 (2 runs) | 1.75 | not measured |" in out
    assert "05 was measured as `04_showdown.ipynb` (at `laptop`)" in out
    assert "Not measured at `full`" in out
    assert "| 9:00 | 01, 02 | two at once | 5.0 | not measured |" in out  # summed
    assert "| 9:30 | — | break |  |  |" in out
    assert "| 9:45 | 03 | seeds | not measured | 2.0–3.0 |" in out
    assert out.startswith("intro\n") and out.endswith("outro\n")


def test_a_block_without_its_end_marker_is_an_error(repo):
    notebooks = make_docs.find_notebooks(repo)
    with pytest.raises(ValueError, match="END GENERATED measurements"):
        make_docs.render("<!-- BEGIN GENERATED measurements -->\n", notebooks, {}, [])
