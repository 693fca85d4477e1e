"""Run identity: a training folder records what it was started with; a resume with anything else is refused.

``train-segmenter A --out R``, interrupted, then ``train-segmenter B --seed 5 --out R`` used to resume
R's backup on other data: a model that saw epochs of both, a metrics.json that named only B, and, with
another seed on the same data, test patients leaked into training. Now every trainer calls
:func:`check_run_identity` once before it reads data or touches the folder:

* a fresh run (no trace of an interrupted one, ``resume_evidence``) records its settings in
  ``R/run_identity.json``: command, resolved data folder, split file and its SHA-256 (or "computed"),
  and every field of its config (seed, image size, recipe, epochs, minutes, init model, ...) except
  those that do not change the result (:data:`NOT_IDENTITY`);
* a resume (``backup/`` of Keras' ``BackupAndRestore``, or the joint trainer's checkpoint) compares
  them: any difference is refused with one line naming each setting (``seed: 0 (started with) vs 5
  (this run)``), as ``run-all`` does for its stages, before anything in R changes. A resume of a run
  that recorded nothing (started before this check existed) is refused too: what it was started with
  is unknown.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from classseg.utils.atomic import sha256_file

IDENTITY_FILE = "run_identity.json"
#: Config fields that do not change what a run learns (threads, figures, latency measurement, debugging).
NOT_IDENTITY = frozenset({"workers", "n_examples", "infer_batch", "run_eagerly", "progress"})
#: What an interrupted run leaves that a rerun would resume from (segmenter, gate: Keras' backup folder).
DEFAULT_EVIDENCE = ("backup",)


class RunIdentityError(ValueError):
    """A resume with settings other than those the run folder was started with (one line)."""


def _plain(value: Any) -> Any:
    """JSON-comparable form (tuples -> lists, paths -> str, dataclasses -> dicts)."""
    return json.loads(json.dumps(asdict(value) if is_dataclass(value) else value, default=str))


def run_identity(command: str, data_dir: str | Path, splits_path: str | Path | None, config: Any) -> dict[str, Any]:
    """The settings a run's results depend on: command, data folder, split file and its hash, config fields."""
    split = Path(splits_path).resolve() if splits_path else None
    identity: dict[str, Any] = {
        "command": command,
        "data_dir": str(Path(data_dir).resolve()),
        "split_file": str(split) if split else "computed from the data (seed, fractions)",
        "split_sha256": sha256_file(split) if split and split.is_file() else None,
    }
    fields = _plain(config) if config is not None else {}
    identity.update({k: v for k, v in sorted(fields.items()) if k not in NOT_IDENTITY})
    return identity


def check_run_identity(out: str | Path, command: str, data_dir: str | Path, splits_path: str | Path | None,
                       config: Any, resume_evidence: Iterable[str] = DEFAULT_EVIDENCE) -> dict[str, Any]:
    """Record (fresh run) or compare (resume) the run folder's identity; see the module docstring.

    Raises :class:`RunIdentityError` naming every differing setting; returns the identity in force."""
    from classseg.utils.atomic import atomic_write_text

    out = Path(out)
    current = run_identity(command, data_dir, splits_path, config)
    path = out / IDENTITY_FILE
    evidence = [name for name in resume_evidence if (out / name).exists()]
    if evidence:
        left = ", ".join(str(out / name) for name in evidence)
        if not path.is_file():
            raise RunIdentityError(f"{out} holds an interrupted run ({left}) that recorded no settings, so what it was "
                                   f"started with is unknown; resuming it could mix two runs: delete {left} to start "
                                   "afresh there, or choose another --out")
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RunIdentityError(f"{path}: unreadable ({err}); delete {left} to start afresh, or choose another "
                                   "--out") from None
        missing = object()
        diffs = [f"{key}: {recorded.get(key, '(not set)')!r} (started with) vs {current.get(key, '(not set)')!r} "
                 "(this run)" for key in sorted(set(recorded) | set(current), key=_order)
                 if recorded.get(key, missing) != current.get(key, missing)]
        if diffs:
            raise RunIdentityError(f"{out} holds an interrupted {recorded.get('command', 'training')} run started with "
                                   f"other settings: {'; '.join(diffs)}. Nothing was changed; resume it with the same "
                                   f"settings, or choose another --out (delete {left} to start afresh there)")
        return recorded
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(current, indent=2))
    return current


def _order(key: str) -> tuple[int, str]:
    first = ("command", "data_dir", "split_file", "split_sha256", "seed", "img_size", "recipe")
    return (first.index(key), key) if key in first else (len(first), key)
