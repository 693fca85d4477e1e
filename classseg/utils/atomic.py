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


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MB blocks: the one hash of model, split and weights files
    (model cards, run identity, run-all stage settings, the shipped manifest)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


# ------------------------------------------------------------------------ output-folder lock (issue 20)
#: The lock file inside an output folder while a command writes it (hidden; removed when the command ends).
LOCK_NAME = ".classseg-lock"


class OutputLockError(RuntimeError):
    """Another run holds the output folder; the message names it (command, pid, host, start) in one line."""


def _host() -> str:
    import socket

    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def _holder_text(info: dict[str, Any]) -> str:
    if not info:
        return "another run"
    return (f"{info.get('command', 'a classseg command')} (pid {info.get('pid', '?')} on host "
            f"{info.get('host', '?')}, started {info.get('started', '?')})")


class OutputLock:
    """An exclusive lock on an output folder, held while a command writes it.

    ``folder/.classseg-lock`` records the holder (command, pid, host, start time). A live holder is told
    apart from a dead one by the kernel: the holder keeps an ``flock`` on the file, which the system
    releases when the process ends however it ends (Ctrl-C, SIGKILL, power cut), so a lock file left by a
    dead run is taken over and a pid reused after a reboot is never mistaken for it. Where ``flock``
    is unavailable (Windows, some network file systems) the recorded pid and host decide: a holder on
    this host whose pid is alive, or any holder on another host, keeps the folder.

    A second writer gets :class:`OutputLockError`, one line naming the holder. Two runs started together
    cannot both pass: ``flock`` is atomic. The folder is created if needed; on :meth:`release` the lock
    file is removed, and so is the folder when this lock created it and it is still empty (a refused run
    leaves nothing behind)::

        with OutputLock(out, "python -m classseg.pipeline"):
            ...  # write into out
    """

    def __init__(self, folder: str | Path, command: str) -> None:
        self.folder = Path(folder)
        self.command = command
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created = False
        self.previous: dict[str, Any] = {}  # what a dead holder had recorded (taken over)

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def read(folder: str | Path) -> dict[str, Any]:
        """The holder recorded in ``folder``'s lock file ({} when none or unreadable)."""
        import json

        try:
            data = json.loads((Path(folder) / LOCK_NAME).read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _refuse(self, info: dict[str, Any]) -> None:
        raise OutputLockError(f"{self.folder} is being written by {_holder_text(info)}; wait for it to finish or "
                              "choose another --out")

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputLockError` (the folder is left as it was)."""
        import datetime
        import json

        if self._fd is not None:
            return
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._created = True
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            fcntl = None
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    self._cleanup_created()
                    self._refuse(self.read(self.folder))
                except OSError:  # no flock here (some network file systems): pid and host decide
                    fcntl_ok = False
                else:
                    fcntl_ok = True
            else:  # pragma: no cover
                fcntl_ok = False
            try:  # the file we locked must still be the one at the path (a releasing holder unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = self.read(self.folder)
            if not fcntl_ok and previous:
                alive = previous.get("host") != _host() or _pid_alive(int(previous.get("pid", -1)))
                if alive and previous.get("pid") != os.getpid():
                    os.close(fd)
                    self._cleanup_created()
                    self._refuse(previous)
            self.previous = previous
            info = {"command": self.command, "pid": os.getpid(), "host": _host(),
                    "started": datetime.datetime.now().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(info).encode())
            with contextlib.suppress(OSError):
                os.fsync(fd)
            self._fd = fd
            return
        self._cleanup_created()
        raise OutputLockError(f"{self.folder}: could not take the output lock (it kept changing); try again")

    def _cleanup_created(self) -> None:
        if self._created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when still empty
            self._created = False

    def release(self) -> None:
        """Remove the lock file and let go (the folder too, when this lock made it and it is empty)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # unlink first: a waiter that opened it then sees another inode and retries
        os.close(self._fd)
        self._fd = None
        self._cleanup_created()

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None
