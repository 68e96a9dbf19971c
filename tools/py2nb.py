"""Build a notebook from a percent-format script (``# %%`` code cells, ``# %% [markdown]`` prose).

    python tools/py2nb.py notebooks/src/00_setup_check.py notebooks/00_setup_check.ipynb

The script is the editable source; the notebook is stored without outputs.
"""
import sys
from pathlib import Path

import nbformat

MARKDOWN = "# %% [markdown]"
CODE = "# %%"


def cells_from_script(text: str) -> list:
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == "code" and body.strip():
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith(MARKDOWN) or line.startswith(CODE):
            flush()
            kind, lines = ("markdown" if line.startswith(MARKDOWN) else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def main(source: str, target: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = cells_from_script(Path(source).read_text())
    for index, cell in enumerate(notebook.cells):
        cell.id = f"cell-{index:02d}"
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(notebook)
    nbformat.write(notebook, target)


if __name__ == "__main__":
    main(*sys.argv[1:3])
