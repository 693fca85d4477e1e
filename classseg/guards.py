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

from classseg.data.walk import walk_following_links


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


def mark_unfinished(folder: str | Path, **info: object) -> Path:
    """Mark ``folder`` as being written (a later run may replace it if this one never finishes)."""
    from classseg.jsonio import write_json

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
