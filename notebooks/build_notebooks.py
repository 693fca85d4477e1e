"""Build the four Colab-style classseg notebooks from their sources in ``notebooks/src/``.

The sources are plain Python scripts in jupytext's *percent* format, so ruff and reviewers see every
cell's code: ``# %%`` starts a code cell (``# %% tags=["parameters"]`` the papermill-style parameters
cell, which CI overrides with tiny settings), ``# %% [markdown]`` a Markdown cell whose lines are
``# ``-prefixed, and IPython magics are written as ``# %magic`` comments. Lines before the first
``# %%`` are a header for readers. ``# %% include: FILE`` puts the cells of ``src/FILE`` there: the install
cell every notebook shares (``src/_install.py``; it runs before classseg can be imported, so it cannot be a
call into the package like the rest of the shared setup, :mod:`classseg.workflows.notebook`). Run after editing a
source::

    python notebooks/build_notebooks.py           # (re)write notebooks/*.ipynb (an executed one is kept while its
                                                  # code matches the source)
    python notebooks/build_notebooks.py --check   # exit 1 when a committed notebook's cells differ from its source
                                                  # (outputs aside) or a notebook exceeds MAX_BYTES
    python notebooks/build_notebooks.py --execute 03_classseg_pipeline   # run it on the bundled sample, keep outputs

Notebooks in :data:`EXECUTED` are committed with their outputs (figures and tables visible on GitHub): they need no
training (the shipped models on the bundled sample). ``--execute`` runs one with its default parameters except
``INSTALL = False`` (the kernel's classseg is used; the committed cell keeps the source's text), leaves out stderr
(progress bars, library logs), shows paths from the checkout, shrinks every image output to at most
:data:`MAX_IMAGE_WIDTH` pixels wide and refuses a result over :data:`MAX_BYTES`. The others need
training runs and are committed without outputs; CI executes all four with tiny settings.

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

#: Committed with outputs: runs on the shipped models and the bundled sample, no training.
EXECUTED = ("03_classseg_pipeline",)
#: Size limit of a committed notebook, and the widest image output kept (images are shrunk to it).
MAX_BYTES = 600_000
MAX_IMAGE_WIDTH = 720

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


def cleared(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` without outputs, execution counts and execution metadata (what :func:`build` gives)."""
    out = nbformat.from_dict(nb)
    for cell in out.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    return out


def shrink_images(nb: nbformat.NotebookNode, width: int = MAX_IMAGE_WIDTH) -> int:
    """Re-encode every PNG output wider than ``width`` at that width (area interpolation); returns how many."""
    import base64

    import cv2
    import numpy as np

    shrunk = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            image = cv2.imdecode(np.frombuffer(base64.b64decode(data["image/png"]), np.uint8), cv2.IMREAD_UNCHANGED)
            if image is None or image.shape[1] <= width:
                continue
            height = round(image.shape[0] * width / image.shape[1])
            ok, png = cv2.imencode(".png", cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA),
                                   [cv2.IMWRITE_PNG_COMPRESSION, 9])
            data["image/png"] = base64.b64encode(png.tobytes()).decode("ascii") + "\n"
            output.setdefault("metadata", {}).pop("image/png", None)
            shrunk += 1
    return shrunk


def execute(name: str, out: Path = HERE, timeout: int = 900) -> Path:
    """Run notebook ``name`` in ``notebooks/`` with its default parameters (``INSTALL = False``), shrink its images,
    write it with its outputs; refuses (``SystemExit``) a notebook over :data:`MAX_BYTES`."""
    from nbclient import NotebookClient

    nb = build(name)
    params = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    source = params.source
    params.source = re.sub(r"^INSTALL = True", "INSTALL = False", source, flags=re.M)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    params.source = source
    nb.metadata = build(name).metadata  # the kernel adds its language_info; the committed notebook keeps the source's
    root = str(HERE.parent) + "/"
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":  # progress bars and library logs (stderr) left out; paths shown from the checkout
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
            for o in cell.outputs:
                if o.output_type == "stream":
                    o.text = o.text.replace(root, "")
                for key, value in o.get("data", {}).items():
                    if key.startswith("text/") and isinstance(value, str):
                        o.data[key] = value.replace(root, "")
    shrink_images(nb)
    text = render(nb)
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise SystemExit(f"{name}: {len(text.encode('utf-8'))} bytes with outputs, over MAX_BYTES = {MAX_BYTES}")
    path = out / f"{name}.ipynb"
    path.write_text(text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare, or with ``--execute`` run) ``notebooks/<name>.ipynb``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a notebook on disk differs from its source (outputs aside) or is too large")
    parser.add_argument("--execute", nargs="+", choices=EXECUTED, default=None, metavar="NAME",
                        help=f"execute these notebooks and keep their outputs ({', '.join(EXECUTED)})")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: notebooks/)")
    args = parser.parse_args(argv)
    if args.execute:
        for name in args.execute:
            print(f"wrote {execute(name, args.out)} (executed)")
        return 0
    stale, large = [], []
    for name in NOTEBOOKS:
        path = args.out / f"{name}.ipynb"
        text = render(build(name))
        on_disk = path.read_text(encoding="utf-8") if path.is_file() else None
        same = on_disk is not None and render(cleared(nbformat.reads(on_disk, as_version=4))) == text
        if on_disk is not None and len(on_disk.encode("utf-8")) > MAX_BYTES:
            large.append(f"{path} ({len(on_disk.encode('utf-8'))} bytes)")
        if args.check:
            if not same:
                stale.append(path)
        elif same and name in EXECUTED:
            print(f"kept {path} (its code matches the source; outputs kept)")
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}" + (f" without outputs: run --execute {name}" if name in EXECUTED else ""))
    if stale:
        print("out of date (run python notebooks/build_notebooks.py): " + ", ".join(map(str, stale)), file=sys.stderr)
    if large:
        print(f"over MAX_BYTES = {MAX_BYTES}: " + ", ".join(large), file=sys.stderr)
    return 1 if stale or (args.check and large) else 0


if __name__ == "__main__":
    sys.exit(main())
