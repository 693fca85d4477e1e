"""Result tables: Markdown / LaTeX (booktabs) / CSV writers and the cross-run comparison.

Markdown and LaTeX are written here by hand on purpose: ``DataFrame.to_markdown`` needs
``tabulate`` and ``DataFrame.to_latex`` needs ``jinja2``, neither of which is a classseg
dependency. Every table carries a caption and a notes line saying how its numbers were
obtained (split, seeds, weights, image size, epochs).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

#: Figures of :func:`compare_runs`: :class:`classseg.evaluation.Scores` names, read as they are written.
COMPARE_METRICS = (
    "accuracy", "sensitivity", "specificity", "precision", "f1_macro", "auc",
    "gate_accuracy", "gate_sensitivity", "gate_specificity", "gate_auc",
    "dice_tumor_slices", "iou_tumor_slices", "hd95_detected_px", "missed_tumor_slices", "dice_end_to_end",
    "dice_per_patient", "train_minutes", "params", "ms_per_slice",
)

#: Columns of :func:`compare_runs`, in order (``<metric>_std`` columns follow their metric when present).
COMPARE_COLUMNS = ("model", "kind", "weights", "img_size", "epochs", "seed", *COMPARE_METRICS, "split_file",
                   "run_dir")

#: Labelling field -> keys in metrics.json / results.csv / manifest.json (and its ``config``), first match wins.
LABEL_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("model", "backbone"),
    "weights": ("weights",),
    "img_size": ("img_size",),
    "epochs": ("epochs",),
    "seed": ("seed",),
    "split_file": ("split_file", "splits"),  # "splits": folders from before run.json (joint metrics.json)
}

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


# ----------------------------------------------------------------------------------------- formatting


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def format_mean_std(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    """``"0.912 ± 0.013"``; just the mean when ``std`` is missing, ``""`` when the mean is."""
    if _is_missing(mean):
        return ""
    if _is_missing(std):
        return f"{float(mean):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {float(std):.{digits}f}"


def format_value(value: Any, digits: int = 3) -> str:
    """Display text for one cell: floats with ``digits`` decimals, whole numbers without, blanks for NaN."""
    if _is_missing(value):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        return f"{float(value):.{digits}f}"
    return str(value)


def format_table(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """String table for display: ``x`` and ``x_std`` columns merge into ``"x ± std"``."""
    out = {}
    for col in df.columns:
        if col.endswith("_std") and col[: -len("_std")] in df.columns:
            continue
        std_col = f"{col}_std"
        if std_col in df.columns:
            out[col] = [format_mean_std(m, s, digits) for m, s in zip(df[col], df[std_col], strict=True)]
        else:
            out[col] = [format_value(v, digits) for v in df[col]]
    return pd.DataFrame(out, index=df.index)


def _numeric_columns(df: pd.DataFrame) -> set[str]:
    return {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])}


def to_markdown(df: pd.DataFrame, caption: str = "", notes: str = "", digits: int = 3) -> str:
    """GitHub-flavoured Markdown table (numeric columns right-aligned), caption above, notes below."""
    numeric = _numeric_columns(df)
    text = format_table(df, digits)

    def cell(value: Any) -> str:
        return str(value).replace("|", r"\|").replace("\n", " ")

    lines = []
    if caption:
        lines += [f"**{caption}**", ""]
    lines.append("| " + " | ".join(cell(c) for c in text.columns) + " |")
    lines.append("|" + "|".join("---:" if c in numeric else ":---" for c in text.columns) + "|")
    for _, row in text.iterrows():
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    if notes:
        lines += ["", f"*Notes:* {notes}"]
    return "\n".join(lines) + "\n"


def latex_escape(text: Any) -> str:
    """Escape LaTeX special characters; ``±`` becomes ``$\\pm$``."""
    escaped = re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIAL[m.group()], str(text))
    return escaped.replace("±", r"$\pm$")


def to_latex(df: pd.DataFrame, caption: str = "", notes: str = "", label: str | None = None,
             digits: int = 3) -> str:
    """A ``table`` float with a booktabs ``tabular`` (``\\toprule``/``\\midrule``/``\\bottomrule``).

    Needs ``\\usepackage{booktabs}``. The notes line is set in footnotesize under the table.
    """
    numeric = _numeric_columns(df)
    text = format_table(df, digits)
    spec = "".join("r" if c in numeric else "l" for c in text.columns)
    lines = [r"\begin{table}[htbp]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
              " & ".join(latex_escape(c) for c in text.columns) + r" \\", r"\midrule"]
    for _, row in text.iterrows():
        lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines += [r"\par\smallskip", rf"{{\footnotesize \emph{{Notes:}} {latex_escape(notes)}\par}}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def run_notes(split: Any = None, seeds: Any = None, weights: Any = None, img_size: Any = None,
              epochs: Any = None, extra: str = "") -> str:
    """The notes line every table carries, e.g. ``"Split: splits.csv; seed(s): 0, 1; weights: none; ..."``.

    Each argument may be a single value or an iterable of values (unique values are listed).
    """

    def show(values: Any, unit: str = "") -> str:
        if values is None or isinstance(values, (str, int, float)):
            values = [values]
        uniq = []
        for v in values:
            if not _is_missing(v) and str(v) not in uniq:
                uniq.append(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
        uniq = list(dict.fromkeys(uniq))
        return (", ".join(uniq) + unit) if uniq else "not recorded"

    text = (f"Split: {show(split)}; seed(s): {show(seeds)}; weights: {show(weights)}; "
            f"image size: {show(img_size, ' px')}; epochs: {show(epochs)}.")
    return f"{text} {extra}".strip()


def write_table(df: pd.DataFrame, out_stem: str | Path, caption: str, notes: str, label: str | None = None,
                digits: int = 3, columns: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``<out_stem>.md``, ``.tex`` (booktabs) and ``.csv`` (raw values); returns ``{"md", "tex", "csv"}``.

    ``columns``: the columns shown in md / tex (in the frame's order); the csv always keeps every column."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_stem.with_name(f"{out_stem.name}.{ext}") for ext in ("md", "tex", "csv")}
    from classseg.utils.atomic import atomic_to_csv, atomic_write_text

    shown = df if columns is None else df[[c for c in df.columns if c in set(columns)]]
    atomic_write_text(paths["md"], to_markdown(shown, caption, notes, digits))
    atomic_write_text(paths["tex"], to_latex(shown, caption, notes, label, digits))
    atomic_to_csv(df, paths["csv"], index=False)
    return paths


# ----------------------------------------------------------------------------------------- metrics.md

#: Schema figures shown for masks, for a slice call, and for a gate (classseg.evaluation.Scores names).
SEGMENTATION_FIELDS = ("dice_tumor_slices", "iou_tumor_slices", "hd95_detected_px", "missed_tumor_slices",
                       "dice_end_to_end", "dice_per_patient", "false_positive_slices")
DETECTION_FIELDS = ("accuracy", "sensitivity", "specificity", "precision", "tp", "fp", "tn", "fn")
GATE_FIELDS = ("gate_accuracy", "gate_sensitivity", "gate_specificity", "gate_precision", "gate_auc")


def scores_frame(sections: Mapping[str, Mapping[str, Any]], fields: Sequence[str]) -> pd.DataFrame:
    """One row per figure (labelled with its unit), one column per section (e.g. test / val)."""
    from classseg.evaluation.scores import LABELS

    rows = [{"figure": LABELS.get(key, key), **{name: section.get(key) for name, section in sections.items()}}
            for key in fields]
    return pd.DataFrame(rows, columns=["figure", *sections], dtype=object)  # counts stay whole numbers


def scores_line(scores: Mapping[str, Any], fields: Sequence[str], digits: int = 4) -> str:
    """``"Dice (tumor slices) 0.8123  HD95 px (detected tumor slices) 7.2100  ..."`` for a console summary."""
    from classseg.evaluation.scores import LABELS

    return "  ".join(f"{LABELS.get(k, k)} {format_value(scores.get(k), digits) or 'n/a'}" for k in fields)


def scores_markdown(title: str, sections: Mapping[str, Mapping[str, Any]], fields: Sequence[str],
                    facts: Sequence[str] = (), notes: str | None = None, digits: int = 4) -> str:
    """A run's ``metrics.md``: title, fact lines, the :func:`scores_frame` table and the definitions."""
    from classseg.evaluation.scores import DEFINITIONS

    lines = [f"# {title}", ""] + [f"- {fact}" for fact in facts] + ([""] if facts else [])
    table = to_markdown(scores_frame(sections, fields), notes=notes if notes is not None else DEFINITIONS,
                        digits=digits)
    return "\n".join(lines) + table


# ----------------------------------------------------------------------------------------- comparison


def _number(value: Any) -> tuple[float | None, float | None]:
    """(mean, std) from a metric value: a number, ``{"mean", "std"}``, a per-patient mapping or list."""
    if isinstance(value, bool) or _is_missing(value):
        return None, None
    if isinstance(value, (int, float)):
        return (None, None) if math.isnan(float(value)) else (float(value), None)
    if isinstance(value, str):
        try:
            return float(value), None
        except ValueError:
            return None, None
    if isinstance(value, Mapping):
        if "mean" in value:
            return _number(value["mean"])[0], _number(value.get("std"))[0]
        return _number(list(value.values()))
    if isinstance(value, (list, tuple)):
        items = [v.get("dice") if isinstance(v, Mapping) else v for v in value]
        nums = [n for n in (_number(v)[0] for v in items) if n is not None]
        return (float(sum(nums) / len(nums)), None) if nums else (None, None)
    try:  # NumPy scalars
        return float(value), None
    except (TypeError, ValueError):
        return None, None


def _sections(d: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Where test figures live: the dict itself, then its ``test`` sub-dict (never ``val`` or others)."""
    test = d.get("test")
    return [d, test] if isinstance(test, Mapping) else [d]


def _first(sources: Sequence[Mapping[str, Any]], keys: Iterable[str]) -> Any:
    """First usable value: sources in order (shallow first), within a source the aliases in order."""
    keys = tuple(keys)
    for src in sources:
        for key in keys:
            if key in src and not _is_missing(src[key]) and src[key] != "":
                return src[key]
    return None


def _label_sources(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    config = manifest.get("config")
    return [manifest] + ([config] if isinstance(config, Mapping) else [])


def _row(sources: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]], **fixed: Any) -> dict:
    row: dict[str, Any] = {}
    for col, keys in LABEL_KEYS.items():
        value = _first(list(sources) + list(labels), keys)
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        row[col] = value if isinstance(value, (str, int, float)) else None
    for col in COMPARE_METRICS:
        # properties of the model / run (not of a scored set): the labels (manifest, top level) count too
        where = list(sources) + list(labels) if col in ("params", "train_minutes", "ms_per_slice") else sources
        mean, std = _number(_first(where, (col,)))
        if std is None:  # results.csv style: a separate <key>_std column
            std = _number(_first(sources, (f"{col}_std",)))[0]
        row[col] = mean
        if std is not None:
            row[f"{col}_std"] = std
    row.update({k: v for k, v in fixed.items() if v is not None})
    return row


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


#: Fields of a run record (``run.json``, :class:`classseg.training.run.RunRecord`) that label a row; the
#: record's ``extra`` adds the model properties among them.
RECORD_LABELS = ("model", "kind", "weights", "img_size", "epochs", "seed", "split_file", "train_minutes",
                 "params", "ms_per_slice")


def _run_record(folder: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(labels, test figures) of a folder's ``run.json``; None for a folder without one (older runs)."""
    path = folder / "run.json"
    if not path.is_file():
        return None
    record = _read_json(path)
    merged = {**(record.get("extra") or {}), **record}
    labels = {k: merged[k] for k in RECORD_LABELS if k in merged and not _is_missing(merged[k])}
    test = record.get("test") if isinstance(record.get("test"), Mapping) else {}
    return labels, dict(test)


def _run_rows(run_dir: Path) -> list[dict[str, Any]]:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    manifest = _read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}
    labels = _label_sources(manifest)
    rows = []
    if (run_dir / "results.csv").exists():  # phase 1: one row per backbone (figures: mean over repeats)
        table = pd.read_csv(run_dir / "results.csv")
        for record in table.to_dict("records"):
            record = {k: v for k, v in record.items() if not _is_missing(v)}
            name = str(_first([record], LABEL_KEYS["model"]) or run_dir.name)
            per_model = run_dir / name / "metrics.json"
            extra = _sections(_read_json(per_model))[::-1] if per_model.exists() else []  # test first
            run_record = _run_record(run_dir / name)  # the backbone's run.json labels it when present
            run_labels = [run_record[0]] if run_record else []
            rows.append(_row([*run_labels, record, *extra], [*run_labels, *labels], model=name, kind="classifier"))
        return rows
    if not (run_dir / "metrics.json").exists():
        raise ValueError(f"{run_dir}: no results.csv or metrics.json (not a classseg run folder)")
    metrics = _read_json(run_dir / "metrics.json")
    shared = _sections(metrics)[::-1]  # a ``test`` sub-dict first, then the top level
    run_record = _run_record(run_dir)
    if run_record is not None:  # a training run: its record says what it is and what it delivered on test
        run_labels, test = run_record
        kind, model = str(run_labels.get("kind")), str(run_labels.get("model"))
        rows.append(_row([run_labels, test, *shared], [run_labels, *labels], model=model, kind=kind))
        if kind == "joint" and isinstance(metrics.get("segment_all"), Mapping):  # the mask head without its gate
            rows.append(_row([metrics["segment_all"]], [run_labels, metrics, *labels],
                             model=f"{model} (mask head alone)", kind=kind))
        return rows
    if isinstance(metrics.get("gated"), Mapping):  # pipeline output folder
        for key, label in (("gated", "gated"), ("segment_all", "segment all")):
            if isinstance(metrics.get(key), Mapping):
                rows.append(_row([metrics[key], *shared], labels,
                                 model=f"{run_dir.name} ({label})", kind="pipeline"))
        return rows
    has_masks = _first(shared, ("dice_tumor_slices",)) is not None
    kind = manifest.get("kind") or metrics.get("kind") or (
        ("joint" if _first(shared, ("gate_accuracy",)) is not None else "segmenter") if has_masks else "classifier")
    model = (_first(shared + labels, ("model", "name", "model_name"))
             or {"segmenter": "resunet", "joint": "joint"}.get(str(kind))
             or _first(shared + labels, ("backbone",)) or run_dir.name)
    rows.append(_row(shared, labels, model=str(model), kind=str(kind)))
    if kind == "joint" and isinstance(metrics.get("segment_all"), Mapping):  # the mask head without its gate
        rows.append(_row([metrics["segment_all"]], [metrics, *labels], model=f"{model} (mask head alone)",
                         kind="joint"))
    return rows


def compare_runs(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per model from classseg run folders (test-split figures).

    Folder kinds: phase-1 (``results.csv``, one row per backbone; per-backbone ``metrics.json``
    fills gaps), segmenter / joint / classifier (``metrics.json``, test figures at top level or
    under ``test``), pipeline output (``metrics.json`` with ``gated`` / ``segment_all`` sections,
    one row each). Labelling fields come from the metrics, then ``manifest.json`` (and its
    ``config``). Figures are read by their :class:`classseg.evaluation.Scores` names
    (:data:`COMPARE_METRICS`), never guessed from other keys; a run that did not write one leaves it
    blank. ``<metric>_std`` columns appear when runs report them.
    """
    rows = []
    for run_dir in run_dirs:
        for row in _run_rows(Path(run_dir)):
            row["run_dir"] = str(run_dir)
            rows.append(row)
    columns = [c for c in COMPARE_COLUMNS]
    for row in rows:
        for key in row:
            if key.endswith("_std") and key not in columns:
                columns.insert(columns.index(key[: -len("_std")]) + 1, key)
    df = pd.DataFrame(rows, columns=columns)
    for col in ("img_size", "epochs", "params", "missed_tumor_slices"):
        df[col] = _whole_numbers(df[col])
    df["seed"] = pd.Series([None if _is_missing(v) else str(int(v)) if isinstance(v, (int, float)) else str(v)
                            for v in df["seed"]], index=df.index, dtype=object)
    metric_cols = [c for c in df.columns if c in COMPARE_METRICS or c.endswith("_std")]
    df[metric_cols] = df[metric_cols].apply(pd.to_numeric, errors="coerce")
    return df


def _whole_numbers(values: pd.Series) -> pd.Series:
    """Numeric; nullable integers when every value is a whole number (a count), else floats kept as they
    are (e.g. a count already averaged by a run: 26.33 stays 26.33, issue 18)."""
    numbers = pd.to_numeric(values, errors="coerce")
    present = numbers.dropna()
    if len(present) and not (present == present.round()).all():
        return numbers.astype(float)
    return numbers.round().astype("Int64")


def comparison_notes(df: pd.DataFrame) -> str:
    """Notes line for a :func:`compare_runs` table (splits, seeds, weights, sizes, epochs, metric definitions)."""
    from classseg.evaluation.scores import DEFINITIONS

    return run_notes(df.get("split_file"), df.get("seed"), df.get("weights"), df.get("img_size"),
                     df.get("epochs"),
                     extra=("Test-split figures as recorded by each run. " + DEFINITIONS + " img_size is the size "
                            "a model was fed, not the size it was scored at. ms_per_slice measured by each run "
                            "on its own machine (manifest.json). Blank = not reported by that run."))


#: Labelling columns that identify one configuration across seeds (:func:`aggregate_seeds`).
GROUP_COLUMNS = ("model", "kind", "weights", "img_size", "epochs", "split_file")


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration of a :func:`compare_runs` table: every figure as mean and sample std
    (``ddof = 1``) over its runs, ``seed`` listing the seeds and ``n_runs`` counting them.

    Rows sharing :data:`GROUP_COLUMNS` are one configuration (order of first appearance kept). A
    configuration with one run has no ``_std`` value. Means of counts (``missed_tumor_slices``) keep
    their decimals. The per-run rows behind each mean are ``df`` itself: keep them beside the aggregate
    (:func:`write_per_run_rows`; ``classseg compare --aggregate`` writes ``<name>_per_seed.csv``).
    """
    keys = [c for c in GROUP_COLUMNS if c in df.columns]
    metrics = [c for c in COMPARE_METRICS if c in df.columns]
    rows = []
    for _, group in df.groupby([df[k].astype(str) for k in keys], sort=False, dropna=False):
        row: dict[str, Any] = {k: group[k].iloc[0] for k in keys}
        row["seed"] = ", ".join(str(v) for v in group["seed"] if not _is_missing(v))
        row["n_runs"] = len(group)
        for col in metrics:
            values = pd.to_numeric(group[col], errors="coerce").dropna()
            row[col] = float(values.mean()) if len(values) else None
            if len(values) > 1 and col != "params":  # a model property, not a result
                row[f"{col}_std"] = float(values.std(ddof=1))
        rows.append(row)
    columns = [*keys, "seed", "n_runs"]
    for col in metrics:
        columns.append(col)
        if any(f"{col}_std" in r for r in rows):
            columns.append(f"{col}_std")
    out = pd.DataFrame(rows, columns=columns)
    for col in ("img_size", "epochs", "params"):  # labels and a model property: the same in every run
        if col in out:
            out[col] = _whole_numbers(out[col])
    # counts such as missed_tumor_slices are means here and keep their decimals (26.33, not 26; issue 18)
    return out


def write_per_run_rows(df: pd.DataFrame, path: str | Path) -> Path:
    """The per-run (per-seed) rows behind an :func:`aggregate_seeds` table as a CSV, so that every mean ±
    std shown can be traced to the runs it was made from (issue 18). Columns: :data:`GROUP_COLUMNS`,
    ``seed``, the figures, ``run_dir``; rows in the table's order, seeds ascending within a configuration."""
    from classseg.utils.atomic import atomic_to_csv

    keys = [c for c in GROUP_COLUMNS if c in df.columns]
    order = {key: i for i, key in enumerate(dict.fromkeys(map(tuple, df[keys].astype(str).to_numpy())))}
    rank = [order[tuple(row)] for row in df[keys].astype(str).to_numpy()]
    seed = pd.to_numeric(df["seed"], errors="coerce") if "seed" in df else pd.Series(0, index=df.index)
    out = df.assign(_group=rank, _seed=seed.to_numpy()).sort_values(["_group", "_seed"], kind="stable")
    out = out.drop(columns=["_group", "_seed"]).dropna(axis=1, how="all")
    front = [c for c in (*keys, "seed") if c in out.columns]
    out = out[front + [c for c in out.columns if c not in front]]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_to_csv(out, path, index=False)
    return path
