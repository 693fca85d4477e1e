"""Atomic file writes: every file goes to a temporary file in the same folder first, then ``os.replace``.

A process killed (SIGKILL, power cut after the fsync) while writing leaves the previous version of
the file untouched: readers see either the old complete file or the new complete file, never a
truncated one. The temporary file is a hidden ``.<stem>.<random>.tmp<suffixes>`` in the target's
folder (same file system, so the rename is atomic) and keeps the target's suffixes, because Keras
chooses the format from the name (``.keras``, ``.weights.h5``). On an exception (including Ctrl-C)
the temporary file is removed; after a SIGKILL a hidden temporary file may remain beside the target.

::

    with atomic_path("run/segmenter.keras") as tmp:
        model.save(tmp)
    atomic_write_text("run/metrics.md", text)
    atomic_to_csv(frame, "run/history.csv", index=False)
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def temp_path_for(path: str | Path) -> Path:
    """A fresh hidden temporary name beside ``path`` that keeps its suffixes (``.x.ab12.tmp.keras``)."""
    path = Path(path)
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    return path.with_name(f".{stem}.{secrets.token_hex(4)}.tmp{suffixes}")


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; expected a file name", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it is renamed onto ``path``.

    Whatever the block writes to the temporary path (a file; a folder is refused) replaces
    ``path`` in one ``os.replace``. When the block raises, or writes nothing, ``path`` is left
    as it was and the temporary file is removed.
    """
    path = Path(path)
    _check_target(path)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(errno.ENOENT, "nothing was written to the temporary file", str(tmp))
        if fsync:
            _fsync(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", fsync: bool = True, **kwargs: Any) -> Iterator[IO]:
    """``open(tmp, mode)`` for writing; the file replaces ``path`` when the block ends without error."""
    if not any(c in mode for c in "wx"):
        raise ValueError(f"atomic_open is for writing (mode 'w' or 'wb'), got {mode!r}")
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, mode.replace("x", "w"), **kwargs) as f:
        yield f
        f.flush()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return Path(path)


def atomic_to_csv(frame: Any, path: str | Path, **kwargs: Any) -> Path:
    """``frame.to_csv(path, **kwargs)`` (a pandas DataFrame), atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
    return Path(path)


def save_model(model: Any, path: str | Path, **kwargs: Any) -> Path:
    """``model.save(path)`` (Keras ``.keras``) atomically: a crash mid-save keeps the previous file."""
    with atomic_path(path) as tmp:
        model.save(tmp, **kwargs)
    return Path(path)


def save_weights(model: Any, path: str | Path, **kwargs: Any) -> Path:
    """``model.save_weights(path)`` (``.weights.h5``) atomically."""
    with atomic_path(path) as tmp:
        model.save_weights(tmp, **kwargs)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on a clean exit it takes ``path``'s place.

    An existing ``path`` is renamed aside first and removed once the new folder is in place, so a
    crash leaves either the old folder, or the new one (plus at worst a hidden ``.<name>.*.old``
    folder), never a half-written one under ``path``.
    """
    import shutil

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if not tmp.is_dir():
            raise FileNotFoundError(errno.ENOENT, "nothing was written to the temporary folder", str(tmp))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
