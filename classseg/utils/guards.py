"""Checks made before any work: outputs that would overwrite results, cannot be written, or lie inside the input.

Each check raises :class:`OutputError` (a ``ValueError``) whose message names the path and the
problem in one line, so a command can turn it into ``SystemExit(f"{prog}: {err}")``.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class OutputError(ValueError):
    """An output path that must not or cannot be written; the message names it and says why."""


def os_error_message(err: OSError, path: str | Path | None = None) -> str:
    """``PATH: Permission denied`` style one-liner for an ``OSError`` (the file it concerns, the reason)."""
    where = err.filename or path
    what = err.strerror or str(err)
    if err.errno == errno.EROFS:
        what = "read-only file system"
    return f"{where}: {what}" if where else f"{type(err).__name__}: {what}"


def check_writable_dir(folder: str | Path) -> Path:
    """Create ``folder`` (and parents) if needed and prove a file can be created in it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot write to {folder}: it is a file, not a folder")
    probe = folder / f".classseg-write-test-{secrets.token_hex(4)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as err:
        what = "read-only file system" if err.errno == errno.EROFS else (err.strerror or str(err))
        raise OutputError(f"cannot write to {folder}: {what}") from None
    return folder


def check_output_file(path: str | Path, overwrite: bool = False, option: str = "--out") -> Path:
    """An output file: not a folder, not an existing file (unless ``overwrite``), its folder writable."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it, or choose another {option}")
    check_can_create(path.parent)
    return path


def check_output_folder(folder: str | Path, finished: Iterable[str], overwrite: bool = False,
                        option: str = "--out") -> Path:
    """A run folder: refused when it holds a finished run (any of ``finished`` exists) unless ``overwrite``.

    A folder left by an interrupted run (none of the ``finished`` files) is accepted, so the run can
    be repeated. With ``overwrite`` a run-all ``stage.json`` marker in the folder is removed, since it
    would describe the replaced results.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder} exists and is not a folder")
    present = sorted(name for name in finished if (folder / name).exists())
    if present and not overwrite:
        raise OutputError(f"{folder} already holds a finished run ({', '.join(present)}); pass --overwrite to "
                          f"replace it, or choose another {option}")
    check_can_create(folder)  # nothing is created here: a run refused later leaves no folder behind
    if overwrite and (folder / "stage.json").exists():
        (folder / "stage.json").unlink()  # it described the results about to be replaced
    return folder


def check_run_out(out: str | Path, data_dir: str | Path, finished: Iterable[str] | None,
                  overwrite: bool = False) -> None:
    """A training command's ``--out``: never inside the data folder (:func:`check_not_inside`, when that
    folder exists) and never a finished run unless ``overwrite`` (:func:`check_output_folder`; skipped
    when ``finished`` is None, for commands that rewrite a run on purpose)."""
    if Path(data_dir).is_dir():
        check_not_inside(out, data_dir, "the data folder")
    if finished is not None:
        check_output_folder(out, finished, overwrite=overwrite)


def walked_real_dirs(root: str | Path) -> set[Path]:
    """Real paths of ``root`` and every folder below it, following symbolic links (no link loops)."""
    seen: set[Path] = set()
    from classseg.data.walk import walk_following_links  # lazily: utils sit upstream of data

    for dirpath, dirnames, _ in walk_following_links(root):
        seen.add(Path(os.path.realpath(dirpath)))
        seen.update(Path(os.path.realpath(os.path.join(dirpath, d))) for d in dirnames)
    return seen


def check_not_inside(out: str | Path, input_root: str | Path, what: str = "the input folder") -> None:
    """Refuse when ``out`` is (inside) ``input_root`` or any folder reached from it through symbolic links."""
    resolved = Path(os.path.realpath(out))
    for folder in walked_real_dirs(input_root):
        if resolved == folder or folder in resolved.parents:
            raise OutputError(f"refusing to write into {what}: output {resolved} is inside {folder} "
                              f"(reached from {input_root}); choose --out elsewhere")


#: Written into an output folder when a command starts filling it, removed when it has finished.
UNFINISHED_MARKER = ".classseg-unfinished.json"

#: Written into every pipeline output folder when the run starts and kept: the folder walker never reads a
#: folder carrying it as input (an output left inside a test folder is not predicted again).
OUTPUT_MARKER = ".classseg-output.json"


def mark_output(folder: str | Path, **info: object) -> Path:
    """Mark ``folder`` as a classseg output (kept after the run; see :data:`OUTPUT_MARKER`)."""
    from classseg.utils.jsonio import write_json

    return write_json(Path(folder) / OUTPUT_MARKER, {"note": "output folder of classseg; never read as input "
                                                     "by classseg commands", **info})


def mark_unfinished(folder: str | Path, **info: object) -> Path:
    """Mark ``folder`` as being written (a later run may replace it if this one never finishes)."""
    from classseg.utils.jsonio import write_json

    return write_json(Path(folder) / UNFINISHED_MARKER, {"note": "written by a classseg command that has not "
                                                         "finished; the next run replaces this folder", **info})


def mark_finished(folder: str | Path) -> None:
    """Remove the marker of :func:`mark_unfinished`."""
    (Path(folder) / UNFINISHED_MARKER).unlink(missing_ok=True)


def is_unfinished(folder: str | Path, finished_file: str | None = None) -> bool:
    """True when ``folder`` carries the unfinished marker (and lacks ``finished_file`` if one is named)."""
    folder = Path(folder)
    if not (folder / UNFINISHED_MARKER).is_file():
        return False
    return finished_file is None or not (folder / finished_file).exists()


def clear_unfinished(folder: str | Path) -> list[str]:
    """Empty a folder that :func:`is_unfinished` (only then); returns the names removed."""
    import shutil

    folder = Path(folder)
    if not is_unfinished(folder):
        raise OutputError(f"{folder} is not the unfinished output of a classseg run; not clearing it")
    removed = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
        removed.append(child.name)
    return removed


def check_can_create(path: str | Path) -> Path:
    """``path`` (a folder to be made) can be created: its nearest existing ancestor is a writable folder.

    Unlike :func:`check_writable_dir` nothing is created, so a run that fails later leaves no folder.
    """
    path = Path(os.path.abspath(path))
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"cannot write to {path}: it is a file, not a folder")
        ancestor = path
    else:
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise OutputError(f"cannot write to {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(ancestor).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            read_only = False
        what = "read-only file system" if read_only else "permission denied"
        raise OutputError(f"cannot write to {path}: {what} ({ancestor})")
    return path


# ------------------------------------------------------------------------------------ leakage (issue 18)
class LeakageError(ValueError):
    """A val or test patient of a new run was a train or val patient of the weights the run starts from."""


def _recorded_path(text: str, *folders: Path) -> Path | None:
    """The file a recorded ``split_file`` names: its text up to `` (`` (``"runs/x/splits.csv (computed, seed
    0)"``), absolute, or relative to the repository root, the working directory or one of ``folders``."""
    from classseg.utils.paths import REPO_ROOT

    name = str(text).split(" (")[0].strip()
    if not name:
        return None
    path = Path(name)
    candidates = [path] if path.is_absolute() else [REPO_ROOT / path, Path.cwd() / path,
                                                     *(Path(f) / path for f in folders)]
    return next((c for c in candidates if c.is_file()), None)


def start_split_file(model_path: str | Path) -> tuple[Path | None, str]:
    """The split file the weights at ``model_path`` were trained on, and where that was read.

    In order: the model card's ``provenance.split_file`` (a path relative to the repository root such as
    ``data/splits/kaggle_3m_seed0.csv``, :mod:`classseg.models.card`); ``splits.csv`` beside the model (a
    training run folder); ``split_file`` of ``manifest.json`` beside the model (``saved_models/manifest.json``).
    Returns ``(None, why)`` when none of them names a file that exists.
    """
    from classseg.models.card import card_path, read_card
    from classseg.utils.jsonio import read_json

    model_path = Path(model_path)
    folder = model_path.parent
    tried = []
    card = read_card(model_path)
    recorded = (card.provenance or {}).get("split_file") if card is not None else None
    if recorded:
        found = _recorded_path(recorded, folder)
        if found is not None:
            return found, f"{card_path(model_path)} (provenance.split_file)"
        tried.append(f"its card names {recorded!r}, not found")
    else:
        tried.append("no card split_file" if card is not None else "no model card")
    if (folder / "splits.csv").is_file():
        return folder / "splits.csv", f"{folder / 'splits.csv'} (beside the model)"
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            data = read_json(manifest)
        except (ValueError, OSError):
            data = {}
        recorded = data.get("split_file") if isinstance(data, dict) else None
        found = _recorded_path(recorded, folder) if isinstance(recorded, str) else None
        if found is not None:
            return found, f"{manifest} (split_file)"
        tried.append(f"{manifest} names no split file that exists")
    return None, "; ".join(tried)


def check_no_leakage(new_splits: Any, start_splits: Any, start: str, hint: str = "",
                     val_may_stay_val: bool = False) -> dict[str, Any]:
    """Refuse (:class:`LeakageError`, one line naming the patients) when a ``val`` or ``test`` patient of
    ``new_splits`` was a ``train`` or ``val`` patient of ``start_splits`` (the split the starting weights
    ``start`` were trained and chosen on). Both are ``patient_id,split`` tables. Patients the starting
    weights held out as test, or never listed, may be anywhere in the new split; the new run's train
    patients are not checked (training on them again is not leakage). ``val_may_stay_val``: a val patient
    of both passes (re-scoring the same model, where val plays the same role). Returns what was checked."""
    seen = set(start_splits.loc[start_splits["split"].isin(("train", "val")), "patient_id"].astype(str))
    start_val = set(start_splits.loc[start_splits["split"] == "val", "patient_id"].astype(str))
    held = new_splits.loc[new_splits["split"].isin(("val", "test")), ["patient_id", "split"]]
    ids = held["patient_id"].astype(str)
    leaked = ids.isin(seen)
    if val_may_stay_val:
        leaked &= ~((held["split"] == "val") & ids.isin(start_val))
    overlap = held[leaked].sort_values("patient_id")
    if len(overlap):
        named = ", ".join(f"{p} ({s})" for p, s in zip(overlap["patient_id"], overlap["split"]))
        raise LeakageError(f"{len(overlap)} val/test patient(s) of this run were train/val patients of {start}, "
                           f"which this run starts from: {named}{'; ' + hint if hint else ''}")
    return {"model": str(start), "checked": True, "new_val_test_patients": int(len(held)),
            "start_train_val_patients": len(seen), "overlap": []}


def check_start_models(new_splits: Any, models: Iterable[str | Path], hint: str = "",
                       val_may_stay_val: bool = False) -> list[dict[str, Any]]:
    """:func:`check_no_leakage` for every starting model (found with :func:`start_split_file`); a model
    whose split cannot be found is recorded as ``checked: False`` with the reason, never as clean.
    ``val_may_stay_val``: continuing on the starting weights' own split (fine-tuning, where val keeps
    choosing and test stays blind), as ``train-segmenter`` / ``train-gate --init`` do."""
    from classseg.data.splits import load_splits

    records = []
    for model in dict.fromkeys(str(m) for m in models):
        split_file, how = start_split_file(model)
        if split_file is None:
            records.append({"model": model, "checked": False, "why": f"the split it was trained on is unknown "
                            f"({how})"})
            continue
        record = check_no_leakage(new_splits, load_splits(split_file), f"{model} (split {split_file})", hint,
                                  val_may_stay_val)
        records.append({**record, "model": model, "split_file": str(split_file), "split_read_from": how})
    return records


def evaluation_split(run_dir: str | Path, data_dir: str | Path, splits: str | Path | None = None) -> Path:
    """The split file a re-evaluation of the model in ``run_dir`` must use (``--evaluate-only``, issue 18).

    Default: the run folder's own ``splits.csv`` (the split it was trained on), never a new split. A
    ``splits`` file given instead is refused (:class:`LeakageError`) when one of its test patients was a
    train/val patient of the run, or one of its val patients a train patient. Refused (``ValueError``, one
    line naming them) when ``data_dir`` lacks val or test patients of the split: they are the ones scored
    (its train patients are not needed).
    """
    from classseg.data.discovery import discover
    from classseg.data.splits import load_splits

    run_dir = Path(run_dir)
    own = run_dir / "splits.csv"
    if splits is None:
        if not own.is_file():
            raise FileNotFoundError(f"{run_dir} has no splits.csv (the split its model was trained on); pass "
                                    "--splits FILE with that split")
        chosen = own
    else:
        chosen = Path(splits)
        if own.is_file():
            check_no_leakage(load_splits(chosen), load_splits(own), f"the model in {run_dir} (split {own})",
                             hint="evaluate on the run's own split (leave out --splits)", val_may_stay_val=True)
    table = load_splits(chosen)
    present = set(discover(data_dir)["patient_id"].astype(str))
    wanted = table.loc[table["split"].isin(("val", "test")), "patient_id"].astype(str)
    missing = sorted(set(wanted) - present)
    if missing:
        raise ValueError(f"{data_dir} lacks {len(missing)} val/test patient(s) of {chosen}: {', '.join(missing)}; "
                         "evaluate on a data folder that holds them")
    return chosen
