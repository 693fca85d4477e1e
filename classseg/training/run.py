"""One training run, for every trainer: open it, then finish it with one record.

:func:`open_run` does what every trainer did first, in one order: the output folder, the run identity
(:func:`classseg.training.identity.check_run_identity`: a resume with other settings is refused before
anything in the folder changes), the seed (:func:`classseg.utils.seeding.set_seed`) and the resumable run state
(``train_state.json``, :func:`classseg.training.callbacks.open_run_state`). The :class:`TrainingRun` it
returns resolves the patient-level split (:meth:`TrainingRun.resolve_split`), writes ``splits.csv``
(:meth:`TrainingRun.save_split`) and loads the arrays (:meth:`TrainingRun.arrays`).

:meth:`TrainingRun.finish` writes what every run folder ends with: ``run.json`` (one :class:`RunRecord`, the
same fields whatever trained the model: split file and its SHA-256, seed, weights, size, epochs planned and
run, best epoch, minutes, machine, input normalisation, val and test :class:`classseg.evaluation.Scores`),
the training curves, and ``manifest.json``, whose split / seed / weights fields are the record's
(:meth:`RunRecord.manifest_fields`, one set of key names). ``classseg compare`` reads ``run.json``
(:func:`read_run_record`) instead of guessing from each trainer's own ``metrics.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

RUN_FILE = "run.json"
#: The training commands that write a run record.
COMMANDS = ("train-classifiers", "train-segmenter", "train-gate", "train-joint")


@dataclass
class RunRecord:
    """What one training run made and how (``run.json``); the same fields for every trainer.

    ``split_file``: the split file given, or ``<out>/splits.csv (computed, seed N)``; ``split_sha256``: the
    hash of the run's own ``splits.csv`` (the patients it used). ``epochs``: planned; ``epochs_run``: trained.
    ``val`` / ``test``: :class:`classseg.evaluation.Scores` dicts (no per-patient list) of what the run
    delivers. ``extra``: what differs between trainers (e.g. a classifier's repeats, a joint model's tasks)."""

    command: str
    kind: str
    model: str
    split_file: str
    split_sha256: str | None
    seed: int
    weights: str
    img_size: int
    epochs: int
    epochs_run: int
    best_epoch: int | None
    train_minutes: float
    machine: str
    normalization: str
    val: dict[str, Any]
    test: dict[str, Any]
    data_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def manifest_fields(self) -> dict[str, Any]:
        """The record's labelling fields as ``manifest.json`` carries them (the same key names)."""
        keys = ("command", "kind", "model", "split_file", "split_sha256", "seed", "weights", "img_size", "epochs",
                "epochs_run", "best_epoch", "train_minutes", "machine", "normalization")
        return {k: getattr(self, k) for k in keys}


def scores_dict(figures: Mapping[str, Any] | None) -> dict[str, Any]:
    """A :class:`classseg.evaluation.Scores` dict (no per-patient list) of a run's figures: a Scores dict,
    or :func:`classseg.evaluation.classification.classification_metrics` (``n`` -> ``n_slices``)."""
    from classseg.evaluation.scores import Scores

    figures = dict(figures or {})
    if "n_slices" not in figures and "n" in figures:
        figures["n_slices"] = figures["n"]
        if figures.get("tp") is not None and figures.get("fn") is not None:
            figures["n_tumor_slices"] = int(figures["tp"]) + int(figures["fn"])
    return Scores.from_dict(figures).to_dict(per_patient=False)


def write_run_record(folder: str | Path, record: RunRecord) -> Path:
    """Write ``folder/run.json`` atomically."""
    from classseg.utils.jsonio import write_json

    if record.command not in COMMANDS:
        raise ValueError(f"unknown command {record.command!r}; expected one of {', '.join(COMMANDS)}")
    return write_json(Path(folder) / RUN_FILE, asdict(record))


def read_run_record(folder: str | Path) -> RunRecord:
    """The :class:`RunRecord` of a run folder (``folder/run.json``); ``FileNotFoundError`` when it has none."""
    from classseg.utils.jsonio import read_json

    path = Path(folder) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run record (a run folder from before run.json, or not a run folder)")
    data = read_json(path)
    names = {f.name for f in fields(RunRecord)}
    missing = sorted(n for n in names if n not in data and n not in ("data_dir", "extra"))
    if missing:
        raise ValueError(f"{path}: not a run record, missing {', '.join(missing)}")
    return RunRecord(**{k: v for k, v in data.items() if k in names})


def split_label(splits_path: str | Path | None, saved: str | Path, seed: int) -> str:
    """How a run names its split: the split file given, else ``<saved splits.csv> (computed, seed N)``."""
    return str(splits_path) if splits_path else f"{saved} (computed, seed {seed})"


@dataclass
class TrainingRun:
    """An opened run folder (:func:`open_run`): its split, arrays, clock and resumable state."""

    out: Path
    command: str
    data_dir: Path
    splits_path: Path | None
    seed: int
    state: Any = None  # classseg.training.callbacks.RunState
    started: float = field(default_factory=time.perf_counter)
    frame: pd.DataFrame | None = None

    @property
    def split_path(self) -> Path:
        """The run's own ``splits.csv``."""
        return self.out / "splits.csv"

    def resolve_split(self, fractions: tuple[float, float, float] | None = None,
                      require_masks: bool = True) -> pd.DataFrame:
        """The slice table with its ``split`` column (the given split file, else computed from the seed)."""
        from classseg import data as cdata

        kwargs = {"fractions": tuple(fractions)} if fractions is not None else {}
        self.frame = cdata.resolve_splits(cdata.discover(self.data_dir, require_masks=require_masks),
                                          self.splits_path, seed=self.seed, **kwargs)
        return self.frame

    def save_split(self) -> Path:
        """Write the run's ``splits.csv`` (``patient_id,split``, atomically)."""
        from classseg import data as cdata

        if self.frame is None:
            raise RuntimeError("resolve_split() first")
        return cdata.save_splits(cdata.split_table(self.frame), self.split_path)

    def split_fields(self) -> dict[str, Any]:
        """``split_file``, ``split_sha256`` and ``seed``, as the run record and the manifest name them."""
        from classseg.utils.atomic import sha256_file

        return {"split_file": split_label(self.splits_path, self.split_path, self.seed),
                "split_sha256": sha256_file(self.split_path) if self.split_path.is_file() else None,
                "seed": self.seed}

    def rows(self, split: str, select: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
        """The slices of one split (``select`` narrows them, e.g. tumor slices only)."""
        if self.frame is None:
            raise RuntimeError("resolve_split() first")
        rows = self.frame[self.frame["split"] == split]
        return (select(rows) if select is not None else rows).reset_index(drop=True)

    def arrays(self, img_size: int, progress: bool = True, splits: Sequence[str] = ("train", "val", "test"),
               required: Iterable[str] | None = None) -> dict[str, Any]:
        """:class:`classseg.data.SliceArrays` of ``splits`` at ``img_size``; a split of ``required`` (default:
        all of ``splits``) without slices is a ``ValueError`` naming it."""
        from classseg import data as cdata

        required = tuple(splits if required is None else required)
        parts = {name: self.rows(name) for name in splits}
        empty = [name for name in required if parts[name].empty]
        if empty:
            raise ValueError(f"{self.data_dir}: the split leaves no slices in {empty[0]!r}; use more patients or "
                             "another split")
        return {name: cdata.load_arrays(rows, img_size, progress=progress) for name, rows in parts.items()}

    def train_seconds(self) -> float:
        """Seconds of training: the run state's (a resumed run's earlier sessions count), else this session's."""
        if self.state is not None and "elapsed_s" in self.state.values:
            return float(self.state.values["elapsed_s"])
        return time.perf_counter() - self.started

    def record(self, kind: str, model: str, weights: str, img_size: int, epochs: int, epochs_run: int,
               best_epoch: int | None, train_minutes: float, normalization: str, val: Mapping[str, Any] | None,
               test: Mapping[str, Any] | None, machine: str | None = None, **extra: Any) -> RunRecord:
        """A :class:`RunRecord` of this run (command, split, seed, data folder and machine filled in)."""
        from classseg.utils.environment import machine as this_machine

        return RunRecord(command=self.command, kind=kind, model=model, **self.split_fields(), weights=str(weights),
                         img_size=int(img_size), epochs=int(epochs), epochs_run=int(epochs_run),
                         best_epoch=None if best_epoch is None else int(best_epoch),
                         train_minutes=round(float(train_minutes), 2), machine=machine or this_machine(),
                         normalization=str(normalization), val=scores_dict(val), test=scores_dict(test),
                         data_dir=str(self.data_dir), extra=extra)

    def finish(self, record: RunRecord, folder: str | Path | None = None, history: pd.DataFrame | None = None,
               curves: Callable[[pd.DataFrame, Path], Any] | None = None, **manifest: Any) -> RunRecord:
        """End a run folder (``folder``, default the run's): ``run.json``, the training curves (``curves`` of
        ``history``) and ``manifest.json`` (the record's fields, then ``manifest``'s)."""
        finish_run(folder or self.out, record, history, curves, **manifest)
        return record


def finish_run(folder: str | Path, record: RunRecord, history: pd.DataFrame | None = None,
               curves: Callable[[pd.DataFrame, Path], Any] | None = None, manifest: bool = True,
               **manifest_fields: Any) -> Path:
    """``run.json`` (:func:`write_run_record`), curves and ``manifest.json`` of a finished run folder."""
    from classseg.utils.manifest import write_manifest

    folder = Path(folder)
    path = write_run_record(folder, record)
    if curves is not None and history is not None and len(history):
        curves(history, folder / "training_curves.png")
    if manifest:
        write_manifest(folder, **{**record.manifest_fields(), "data_dir": record.data_dir, **manifest_fields})
    return path


def open_run(out: str | Path, command: str, data_dir: str | Path | None, splits_path: str | Path | None,
             config: Any, seed: int, resume_evidence: Iterable[str] = ("backup",),
             run_state: bool = True) -> TrainingRun:
    """Open a run folder: create it, check or record its identity (a resume with other settings is refused,
    :class:`classseg.training.identity.RunIdentityError`), seed everything, open ``train_state.json``
    (a fresh run drops an earlier run's state and history; ``run_state=False``: none)."""
    from classseg import data as cdata
    from classseg.training.callbacks import open_run_state
    from classseg.training.identity import check_run_identity
    from classseg.utils.seeding import set_seed

    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    data_dir = Path(data_dir) if data_dir is not None else Path(cdata.DEFAULT_DATA_DIR)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_run_identity(out, command, data_dir, splits_path, config, tuple(resume_evidence))
    set_seed(seed)
    state = open_run_state(out) if run_state else None
    return TrainingRun(out=out, command=command, data_dir=data_dir,
                       splits_path=Path(splits_path) if splits_path else None, seed=int(seed), state=state)
