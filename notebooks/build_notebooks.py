"""Build the four Colab-style classseg notebooks from their sources in ``notebooks/src/`` (outputs cleared).

The sources are plain Python scripts in jupytext's *percent* format, so ruff and reviewers see every
cell's code: ``# %%`` starts a code cell (``# %% tags=["parameters"]`` the papermill-style parameters
cell, which CI overrides with tiny settings), ``# %% [markdown]`` a Markdown cell whose lines are
``# ``-prefixed, and IPython magics are written as ``# %magic`` comments. Lines before the first
``# %%`` are a header for readers. ``# %% include: FILE`` puts the cells of ``src/FILE`` there: the install
cell every notebook shares (``src/_install.py``; it runs before classseg can be imported, so it cannot be a
call into the package like the rest of the shared setup, :mod:`classseg.workflows.notebook`). Run after editing a
source::

    python notebooks/build_notebooks.py           # (re)write notebooks/*.ipynb
    python notebooks/build_notebooks.py --check   # exit 1 when a committed notebook differs from its source

Each notebook: title (what it reproduces, how results are labelled), a ``parameters`` cell, an install
cell, a GPU check, the data cell (Kaggle when credentials exist, else the bundled sample), one
patient-level split file for every stage, the work, tables and figures inline.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
NOTEBOOKS = ("01_classification_benchmark", "02_resunet_segmentation", "03_classseg_pipeline",
             "04_joint_vs_two_stage")

_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
_MARKER_LINE = re.compile(r"^# %%", re.M)
_INCLUDE = re.compile(r"^# %% include: (?P<file>\S+)$", re.M)
_MAGIC = re.compile(r"^(?P<indent>\s*)# %(?!%)(?P<magic>\w+)")


def _markdown(lines: list[str]) -> str:
    return "\n".join(line[2:] if line.startswith("# ") else line[1:] if line.startswith("#") else line
                     for line in lines)


def _code(lines: list[str]) -> str:
    return "\n".join(re.sub(_MAGIC, lambda m: f"{m.group('indent')}%{m.group('magic')}", line, count=1)
                     for line in lines)


def parse_cells(text: str) -> list:
    """Notebook cells from a percent-format source (the header before the first ``# %%`` is skipped)."""
    cells, kind, tags, lines = [], None, [], []

    def flush() -> None:
        if kind is None:
            return
        while lines and not lines[-1].strip():
            lines.pop()
        if kind == "markdown":
            cells.append(new_markdown_cell(_markdown(lines)))
        else:
            cells.append(new_code_cell(_code(lines), metadata={"tags": tags} if tags else {}))

    for line in text.split("\n"):
        marker = _MARKER.match(line)
        if marker is None:
            if kind is not None:
                lines.append(line)
            continue
        flush()
        rest = marker.group("rest").strip()
        kind = "markdown" if rest.startswith("[markdown]") else "code"
        found = re.search(r"tags=\[(.*?)\]", rest)
        tags = [t.strip().strip('"').strip("'") for t in found.group(1).split(",")] if found else []
        lines = []
    flush()
    return cells


def expand_includes(text: str) -> str:
    """``text`` with each ``# %% include: FILE`` line replaced by the cells of ``src/FILE`` (its header
    before the first ``# %%`` left out)."""

    def cells_of(match: re.Match) -> str:
        included = (SOURCES / match.group("file")).read_text(encoding="utf-8")
        return included[_MARKER_LINE.search(included).start():].rstrip("\n")

    return _INCLUDE.sub(cells_of, text)


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (one of :data:`NOTEBOOKS`) from ``src/<name>.py``, deterministic cell ids."""
    nb = new_notebook(cells=parse_cells(expand_includes((SOURCES / f"{name}.py").read_text(encoding="utf-8"))))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"
        cell["source"] = cell["source"].rstrip("\n")
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": [], "gpuType": "T4"},
    }
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    """The file text nbformat writes for ``nb``."""
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) ``notebooks/<name>.ipynb`` for every notebook."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook on disk differs from its source")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: notebooks/)")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = args.out / f"{name}.ipynb"
        text = render(build(name))
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date (run python notebooks/build_notebooks.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
