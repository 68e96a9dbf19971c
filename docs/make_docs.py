"""Write the measured run times and peak memory into README.md and docs/instructor-guide.md.

    python docs/make_docs.py           # rewrite the generated blocks (make docs)
    python docs/make_docs.py --check   # exit 1 if a generated block differs from the results

Every number comes from the benchmark results files in ``benchmarks/results/`` (written by
``benchmarks/bench_notebooks.py`` and ``benchmarks/bench_tasks.py``); none is typed. The blocks sit
between marker comments::

    <!-- BEGIN GENERATED name ... -->
    ...
    <!-- END GENERATED name -->

Kinds of block, by name:

- ``notebooks``: one row per notebook in ``notebooks/`` (link, what you learn, laptop run time).
  The "what you learn" cell of an existing row is kept, so that prose is edited in place; a new
  notebook gets its title.
- ``measurements``: every notebook's minutes and peak memory per profile, and the files they
  came from. Wholly generated.
- ``fill-*``: a table written by hand whose columns named in ``FILL_COLUMNS`` are filled with the
  measurements of the notebooks named in its ``notebook`` column (several numbers: summed).

Which measurement of a notebook is used: the whole-workbook file of the profile
(``notebooks-<profile>.md``) first, then the files that measured some notebooks
(``notebooks-<profile>-NN-NN.md``, by name), then the seed runs (``tasks-<profile>-seeds.md``).
Rows of a notebook that failed are skipped. A notebook is matched by its name without the number,
so a measurement made before a notebook was renumbered still counts, with a note saying so.

The Python standard library is enough to run this script.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = (ROOT / "README.md", ROOT / "docs" / "instructor-guide.md")
PROFILES = ("smoke", "laptop", "full")  # config.PROFILES (a test checks they agree)
NOT_MEASURED = "not measured"

BEGIN = re.compile(r"<!-- BEGIN GENERATED ([a-z0-9-]+)\b[^>]*-->\n")
END = "<!-- END GENERATED {name} -->"

NOTEBOOK_ROW = re.compile(r"^\| (\d\d_[a-z0-9_]+)\.ipynb \| ([\d.]+) \| ([\d.]+) \| (.+?) \|\s*$")


@dataclass(frozen=True)
class Notebook:
    number: str  # "02"
    name: str  # "02_finetune_gpt2_wikitext"
    title: str  # "Fine-tuning GPT-2 on WikiText"

    @property
    def slug(self) -> str:
        return self.name[3:]


@dataclass(frozen=True)
class Measurement:
    minutes: tuple[float, ...]  # one per run (the seed runs give several)
    peak_gb: float  # the largest of the runs
    source: str  # the results file, relative to the repository
    measured_as: str  # the notebook's file name in that file


@dataclass(frozen=True)
class Source:
    path: str
    command: str
    machine: str


# ---- inputs ----------------------------------------------------------------------------------

def find_notebooks(root: Path = ROOT) -> list[Notebook]:
    """The workbook's notebooks, in order, with the title of their first cell."""
    found = []
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        first = "".join(cells[0]["source"]).strip().splitlines()[0] if cells else path.stem
        title = re.sub(r"^#+\s*(\d\d\s*·\s*)?", "", first).strip()
        found.append(Notebook(path.stem[:2], path.stem, title))
    return found


def _result_files(results: Path, profile: str) -> list[Path]:
    whole = results / f"notebooks-{profile}.md"
    partial = sorted(results.glob(f"notebooks-{profile}-*.md"))
    seeds = sorted(results.glob(f"tasks-{profile}-seeds.md"))
    return ([whole] if whole.is_file() else []) + partial + seeds


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_notebook_runs(text: str) -> list[tuple[str, float, float]]:
    """(notebook name, minutes, peak GB) of each successful row of a bench_notebooks table."""
    rows = []
    for line in text.splitlines():
        match = NOTEBOOK_ROW.match(line)
        if match and match.group(4) == "ok":
            rows.append((match.group(1), float(match.group(2)), float(match.group(3))))
    return rows


def parse_seed_runs(text: str) -> tuple[str | None, list[tuple[float, float]]]:
    """(notebook number, [(minutes, peak GB) of each passed seed]) of a bench_tasks table."""
    title = re.search(r"^# Notebook (\d\d)\b", text, re.M)
    runs, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = _cells(line)
        if header is None and "minutes" in cells and "peak GB" in cells:
            header = cells
        elif header is not None and cells and cells[0].isdigit() and len(cells) == len(header):
            row = dict(zip(header, cells))
            if row.get("notebook") == "passed":
                runs.append((float(row["minutes"]), float(row["peak GB"])))
    return (title.group(1) if title else None), runs


def _source(path: Path, text: str, root: Path) -> Source:
    command = re.search(r"^`([^`]*benchmarks/[^`]*)`", text, re.M)
    command = command.group(1) if command else ""
    machine = next((line for line in text.splitlines() if re.match(r"\d+ cores,", line)), "")
    return Source(path.relative_to(root).as_posix(), command, machine)


def load_measurements(notebooks: list[Notebook], root: Path = ROOT,
                      results: Path | None = None):
    """``({(profile, notebook name): Measurement}, [Source used])``."""
    results = results or root / "benchmarks" / "results"
    by_slug = {nb.slug: nb for nb in notebooks}
    by_number = {nb.number: nb for nb in notebooks}
    measured: dict[tuple[str, str], Measurement] = {}
    sources: list[Source] = []
    for profile in PROFILES:
        for path in _result_files(results, profile):
            text = path.read_text(encoding="utf-8")
            relative = path.relative_to(root).as_posix()
            found = []
            if path.name.startswith("tasks-"):
                number, runs = parse_seed_runs(text)
                notebook = by_number.get(number or "")
                if notebook and runs:
                    found.append((notebook, Measurement(tuple(m for m, _ in runs),
                                                        max(p for _, p in runs), relative,
                                                        notebook.name + ".ipynb")))
            else:
                for name, minutes, peak in parse_notebook_runs(text):
                    notebook = by_slug.get(name[3:])
                    if notebook:
                        found.append((notebook, Measurement((minutes,), peak, relative,
                                                            name + ".ipynb")))
            used = False
            for notebook, measurement in found:
                if (profile, notebook.name) not in measured:
                    measured[(profile, notebook.name)] = measurement
                    used = True
            if used:
                sources.append(_source(path, text, root))
    return measured, sources


# ---- formatting ------------------------------------------------------------------------------

def minutes_text(values: tuple[float, ...]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}"


def _sum(measurements: list[Measurement]) -> tuple[float, ...]:
    return (sum(min(m.minutes) for m in measurements), sum(max(m.minutes) for m in measurements))


def _note_index(sources: list[Source]) -> dict[str, int]:
    return {s.path: n for n, s in enumerate(sources, start=1)}


def _renamed(notebook: Notebook, measurement: Measurement) -> bool:
    return measurement.measured_as != notebook.name + ".ipynb"


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(row) + " |" for row in rows)]


def render_measurements(notebooks, measured, sources) -> list[str]:
    notes = _note_index(sources)
    profiles = [p for p in PROFILES if any(key[0] == p for key in measured)]
    header = ["notebook"]
    for profile in profiles:
        header += [f"`{profile}` minutes", f"`{profile}` peak GB"]
    header.append("measured in")
    rows, renamed = [], {}
    for nb in notebooks:
        row, refs = [f"{nb.number} {nb.title}"], []
        for profile in profiles:
            m = measured.get((profile, nb.name))
            if m is None:
                row += [NOT_MEASURED, ""]
                continue
            runs = f" ({len(m.minutes)} runs)" if len(m.minutes) > 1 else ""
            row += [minutes_text(m.minutes) + runs, f"{m.peak_gb:.2f}"]
            mark = f"[{notes[m.source]}]"
            refs += [] if mark in refs else [mark]
            if _renamed(nb, m):
                renamed.setdefault((nb.number, m.measured_as), []).append(f"`{profile}`")
        rows.append(row + [", ".join(refs)])
    total = ["**sum of the rows**"]
    for profile in profiles:
        found = [measured[(profile, nb.name)] for nb in notebooks if (profile, nb.name) in measured]
        missing = [nb.number for nb in notebooks if (profile, nb.name) not in measured]
        text = minutes_text(_sum(found)) + (f" (without {', '.join(missing)})" if missing else "")
        total += [f"**{text}**", f"**{max(m.peak_gb for m in found):.2f}** (max)"]
    rows.append(total + [""])
    lines = _table(header, rows, right=set(range(1, len(header) - 1)))
    absent = [f"`{p}`" for p in PROFILES if p not in profiles]
    if absent:
        lines += ["", f"Not measured at {' or '.join(absent)}: no results file in "
                      "`benchmarks/results/` for that profile."]
    lines += ["", "Measured in:", ""]
    for n, source in enumerate(sources, start=1):
        detail = "; ".join(part for part in (f"`{source.command}`" if source.command else "",
                                             source.machine.rstrip(".")) if part)
        lines.append(f"{n}. [{source.path}](../{source.path}): {detail}")
    for (number, name), where in renamed.items():
        lines += ["", f"{number} was measured as `{name}` (at {' and '.join(where)}), before the "
                      "notebooks were renumbered."]
    return lines


def render_notebooks(notebooks, measured, existing: dict[str, str]) -> list[str]:
    rows = []
    for nb in notebooks:
        m = measured.get(("laptop", nb.name))
        time = f"{minutes_text(m.minutes)} min" if m else NOT_MEASURED
        link = f"[{nb.number} · {nb.title}](notebooks/{nb.name}.ipynb)"
        rows.append([link, existing.get(nb.name) or nb.title, time])
    found = [measured[("laptop", nb.name)] for nb in notebooks if ("laptop", nb.name) in measured]
    missing = [nb.number for nb in notebooks if ("laptop", nb.name) not in measured]
    lines = _table(["notebook", "what you learn and build", "laptop run time"], rows, right={2})
    if found:
        lines += ["", f"Together about {minutes_text(_sum(found))} minutes of computing at the "
                      "`laptop` profile" + (f" (not counting {', '.join(missing)}, not measured yet)"
                                            if missing else "") + "."]
    return lines


def existing_descriptions(block: str) -> dict[str, str]:
    """Notebook name → the "what you learn" cell of each row of a ``notebooks`` block."""
    found = {}
    for line in block.splitlines():
        match = re.match(r"^\| \[[^\]]*\]\(notebooks/(\d\d_[a-z0-9_]+)\.ipynb\) \| (.*?) \|[^|]*\|\s*$",
                         line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


FILL_COLUMNS = {  # header of a hand-written table → (profile, what is filled in)
    "`laptop` minutes": ("laptop", "minutes"), "`laptop` peak GB": ("laptop", "peak"),
    "`smoke` minutes": ("smoke", "minutes"), "`smoke` peak GB": ("smoke", "peak"),
}


def fill_table(block: str, notebooks, measured) -> list[str]:
    """The hand-written table in ``block`` with its ``FILL_COLUMNS`` recomputed."""
    by_number = {nb.number: nb for nb in notebooks}
    lines = block.rstrip("\n").splitlines()
    header = None
    out = []
    for line in lines:
        if not line.startswith("|"):
            out.append(line)
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            out.append(line)
            continue
        if set("".join(cells)) <= set("-: "):
            out.append(line)
            continue
        numbers = re.findall(r"\b(\d\d)\b", dict(zip(header, cells)).get("notebook", ""))
        for index, name in enumerate(header):
            if name not in FILL_COLUMNS or index >= len(cells):
                continue
            profile, what = FILL_COLUMNS[name]
            found = [measured.get((profile, by_number[n].name)) for n in numbers if n in by_number]
            if not numbers:
                cells[index] = ""
            elif not found or None in found:
                cells[index] = NOT_MEASURED
            elif what == "minutes":
                cells[index] = minutes_text(_sum(found))
            else:
                cells[index] = f"{max(m.peak_gb for m in found):.2f}"
        out.append("| " + " | ".join(cells) + " |")
    return out


def render(text: str, notebooks, measured, sources) -> str:
    """``text`` with every generated block recomputed."""
    out, position = [], 0
    for match in BEGIN.finditer(text):
        if match.start() < position:
            continue
        name = match.group(1)
        end = text.find(END.format(name=name), match.end())
        if end < 0:
            raise ValueError(f"<!-- BEGIN GENERATED {name} --> has no {END.format(name=name)}")
        block = text[match.end():end]
        if name == "notebooks":
            lines = render_notebooks(notebooks, measured, existing_descriptions(block))
        elif name == "measurements":
            lines = render_measurements(notebooks, measured, sources)
        elif name.startswith("fill-"):
            lines = fill_table(block, notebooks, measured)
        else:
            raise ValueError(f"unknown generated block {name!r}")
        out += [text[position:match.end()], "\n".join(lines) + "\n"]
        position = end
    out.append(text[position:])
    return "".join(out)


def regenerate(root: Path = ROOT, targets=TARGETS) -> dict[Path, tuple[str, str]]:
    """``{file: (current text, regenerated text)}`` for every target file."""
    notebooks = find_notebooks(root)
    measured, sources = load_measurements(notebooks, root)
    pairs = {}
    for path in targets:
        text = path.read_text(encoding="utf-8")
        pairs[path] = (text, render(text, notebooks, measured, sources))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a generated block is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, (current, fresh) in regenerate().items():
        if current == fresh:
            continue
        stale.append(path.relative_to(ROOT).as_posix())
        if not args.check:
            path.write_text(fresh, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run `make docs`", file=sys.stderr)
        return 1
    print(f"rewrote {', '.join(stale)}" if stale else "generated blocks are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
