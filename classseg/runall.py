"""``classseg run-all``: split -> phase 1 -> phase 2 -> phase 3 -> joint model -> report, on one split file.

Each stage writes into its own folder under the run folder and, when it has finished, a
``stage.json`` marker (the settings its results depend on, a token, wall time). A stage whose
marker exists with the same settings is not redone, so an interrupted run resumes where it
stopped. A finished stage with other settings (data folder, seed, epochs, ...) is refused with a
message naming each differing setting, before any work is done. Delete a stage folder to redo it;
the finished stages that read its results are then moved aside (``<stage>.stale-<time>``) and redone.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from classseg.data.splits import link_patients
from classseg.jsonio import read_json, write_json
from classseg.manifest import write_manifest
from classseg.models.names import IMAGENET_BACKBONES, SMALL_BACKBONES

STAGES = ("split", "phase1", "phase2", "phase3", "joint", "report")
ALL_BACKBONES = IMAGENET_BACKBONES


@dataclass
class RunAllProfile:
    """Settings of every stage. ``quick`` finishes in minutes on a CPU; ``paper`` uses the papers' settings."""

    name: str = "quick"
    weights: str | None = None
    seed: int = 0
    repeats: int = 1
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    backbones: tuple[str, ...] = SMALL_BACKBONES
    cls_img_size: int = 128
    cls_head: str = "paper"
    cls_epochs: int = 5
    seg_img_size: int = 128
    seg_epochs: int = 5
    seg_batch_size: int = 8
    joint_img_size: int = 128
    joint_epochs: int = 2
    joint_batch_size: int = 16
    extra: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, RunAllProfile] = {
    "quick": RunAllProfile(),
    "paper": RunAllProfile(name="paper", weights="imagenet", repeats=3, backbones=ALL_BACKBONES,
                           cls_img_size=256, cls_epochs=20, seg_img_size=256, seg_epochs=30, seg_batch_size=16,
                           joint_img_size=224, joint_epochs=25),
}


def get_profile(name: str, **overrides: Any) -> RunAllProfile:
    """A named profile with some fields overridden (None values are ignored)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})


class StageSettingsError(ValueError):
    """A finished stage in the run folder was made with other settings than this run asks for."""


#: The stages whose results each stage reads; a stage redone makes those after it stale.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "split": (),
    "phase1": ("split",),
    "phase2": ("split",),
    "phase3": ("split", "phase1", "phase2"),
    "joint": ("split",),
    "report": ("split", "phase1", "phase2", "phase3", "joint"),
}


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _plain(value: Any) -> Any:
    """JSON round trip (tuples -> lists) so settings compare equal to what a marker recorded."""
    return json.loads(json.dumps(value, default=str))


def stage_settings(profile: RunAllProfile, data_dir: str | Path,
                   splits_path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The settings each stage's results depend on (recorded in its ``stage.json`` and compared on reuse)."""
    common = {"data_dir": str(Path(data_dir).resolve()), "seed": profile.seed}
    extra = {"extra": profile.extra} if profile.extra else {}
    split = {**common, "fractions": profile.fractions,
             "splits_path": str(Path(splits_path).resolve()) if splits_path else None,
             "splits_sha256": _sha256(splits_path) if splits_path and Path(splits_path).is_file() else None}
    settings = {
        "split": split,
        "phase1": {**common, "weights": profile.weights, "repeats": profile.repeats, "backbones": profile.backbones,
                   "cls_img_size": profile.cls_img_size, "cls_head": profile.cls_head,
                   "cls_epochs": profile.cls_epochs, **extra},
        "phase2": {**common, "seg_img_size": profile.seg_img_size, "seg_epochs": profile.seg_epochs,
                   "seg_batch_size": profile.seg_batch_size, **extra},
        "phase3": {"data_dir": common["data_dir"]},
        "joint": {**common, "weights": profile.weights, "joint_img_size": profile.joint_img_size,
                  "joint_epochs": profile.joint_epochs, "joint_batch_size": profile.joint_batch_size, **extra},
        "report": {"data_dir": common["data_dir"]},
    }
    return {name: _plain(value) for name, value in settings.items()}


def settings_diff(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"seed: 0 (finished) vs 7 (this run)"`` for every setting that differs; missing = 'not recorded'."""
    diffs = []
    for key in wanted:
        if key not in recorded:
            diffs.append(f"{key}: not recorded (finished) vs {wanted[key]!r} (this run)")
        elif recorded[key] != wanted[key]:
            diffs.append(f"{key}: {recorded[key]!r} (finished) vs {wanted[key]!r} (this run)")
    return diffs


def _move_aside(folder: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.stale-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.stale-{stamp}-{n}")
    folder.rename(target)
    return target


def check_stages(out: Path, settings: dict[str, dict[str, Any]]) -> None:
    """Refuse (:class:`StageSettingsError`) when a finished stage in ``out`` recorded other settings."""
    for name in STAGES:
        marker = out / name / "stage.json"
        if not marker.is_file():
            continue
        try:
            recorded = read_json(marker).get("settings") or {}
        except (ValueError, OSError, AttributeError) as err:
            raise StageSettingsError(f"{marker}: unreadable stage marker ({err}); delete {out / name} to redo "
                                     "the stage") from None
        diffs = settings_diff(recorded, settings[name])
        if diffs:
            raise StageSettingsError(
                f"{out}/{name} was finished with other settings: {'; '.join(diffs)}. Nothing was changed; "
                f"use another --out, or delete {out / name} and the stages after it to redo them")


def _stage(out: Path, name: str, settings: dict[str, Any], work: Callable[[Path], Any], log: Callable) -> bool:
    """Run ``work(stage_dir)`` unless the stage finished earlier with the same settings and inputs.

    A finished stage with other settings raises :class:`StageSettingsError`. A finished stage
    whose upstream stages were redone since (their marker ``token`` changed) is stale: its folder
    is moved aside to ``<name>.stale-<time>`` and the stage runs again. Returns True when it ran.
    """
    folder = out / name
    marker = folder / "stage.json"
    upstream = {}
    for dep in UPSTREAM[name]:
        dep_marker = read_json(out / dep / "stage.json")
        upstream[dep] = dep_marker.get("token")
    if marker.exists():
        recorded = read_json(marker)
        diffs = settings_diff(recorded.get("settings") or {}, settings)
        if diffs:
            raise StageSettingsError(f"{folder} was finished with other settings: {'; '.join(diffs)}; "
                                     f"use another --out, or delete {folder} to redo it")
        stale = [dep for dep, token in upstream.items()
                 if "upstream" in recorded and recorded["upstream"].get(dep) != token]
        if not stale:
            log(f"[{name}] done earlier with the same settings ({marker}); skipping")
            return False
        moved = _move_aside(folder)
        log(f"[{name}] stale: {', '.join(stale)} redone since it finished; old results moved to {moved}")
    folder.mkdir(parents=True, exist_ok=True)
    log(f"[{name}] running ...")
    start = time.perf_counter()
    work(folder)
    seconds = round(time.perf_counter() - start, 1)
    write_json(marker, {"stage": name, "seconds": seconds, "settings": settings, "upstream": upstream,
                        "token": secrets.token_hex(8),
                        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    log(f"[{name}] finished in {seconds:.0f} s")
    return True


def run_all(data_dir: str | Path, out_dir: str | Path, profile: RunAllProfile,
            splits_path: str | Path | None = None, strategy: Any = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage on one split file; return a summary (stage folders, seconds, headline figures)."""
    from classseg import data as cdata

    out = Path(out_dir)
    data_dir = Path(data_dir)
    settings = asdict(profile)
    per_stage = stage_settings(profile, data_dir, splits_path)
    check_stages(out, per_stage)  # before any work: a reused folder with other settings is refused
    out.mkdir(parents=True, exist_ok=True)
    split_file = out / "split" / "splits.csv"

    def make_split(folder: Path) -> None:
        if splits_path:
            splits = cdata.load_splits(splits_path)
        else:
            splits = cdata.split_patients(cdata.discover(data_dir), profile.fractions, seed=profile.seed)
        cdata.save_splits(splits, folder / "splits.csv")

    _stage(out, "split", per_stage["split"], make_split, log)

    def phase1(folder: Path) -> None:
        from classseg.training.classifiers import ClassifierConfig, train_classifiers

        config = ClassifierConfig(backbones=tuple(profile.backbones), weights=profile.weights,
                                  img_size=profile.cls_img_size, head=profile.cls_head, epochs=profile.cls_epochs,
                                  repeats=profile.repeats, seed=profile.seed)
        train_classifiers(config, data_dir, split_file, folder, strategy=strategy)

    _stage(out, "phase1", per_stage["phase1"], phase1, log)

    def phase2(folder: Path) -> None:
        from classseg.training.segmenter import recipe_config, train_segmenter

        # the paper profile trains seed 002's recipe; the quick one the default (fast) recipe
        config = recipe_config("paper" if profile.name == "paper" else "fast", img_size=profile.seg_img_size,
                               epochs=profile.seg_epochs, batch_size=profile.seg_batch_size, seed=profile.seed)
        train_segmenter(config, data_dir, split_file, folder, strategy=strategy)

    _stage(out, "phase2", per_stage["phase2"], phase2, log)

    def phase3(folder: Path) -> None:
        from classseg.pipeline import build_parser
        from classseg.pipeline import run as run_pipeline
        from classseg.training.classifiers import gate_model_path

        gate = read_json(out / "phase1" / "results.json")["gate"]
        predictions = folder / "predictions"
        if predictions.exists():  # left by an interrupted attempt (this stage has no marker): start afresh
            shutil.rmtree(predictions)
        test_dir = link_patients(data_dir, cdata.load_splits(split_file), "test", folder / "test_patients")
        args = build_parser().parse_args(["--test-dir", str(test_dir),
                                          "--classifier", str(gate_model_path(out / "phase1" / "results.json")),
                                          "--segmenter", str(out / "phase2" / "segmenter.keras"),
                                          "--threshold", str(gate.get("threshold", 0.5)),
                                          "--out", str(folder / "predictions")])
        args.reraise_interrupt = True  # Ctrl-C: one line from run-all, not one from each level
        code = run_pipeline(args)
        if code != 0:
            raise RuntimeError(f"phase 3 pipeline failed with exit code {code}")

    _stage(out, "phase3", per_stage["phase3"], phase3, log)

    def joint(folder: Path) -> None:
        from classseg.training.joint import JointConfig, train_joint

        config = JointConfig(weights=profile.weights, img_size=profile.joint_img_size, epochs=profile.joint_epochs,
                             batch_size=profile.joint_batch_size, seed=profile.seed)
        train_joint(config, data_dir, split_file, folder, strategy=strategy)

    _stage(out, "joint", per_stage["joint"], joint, log)

    def report(folder: Path) -> None:
        from classseg.report import write_report

        write_report(out, folder)

    _stage(out, "report", per_stage["report"], report, log)
    write_manifest(out, command="run-all", profile=settings, data_dir=str(data_dir), split_file=str(split_file))
    summary = {name: read_json(out / name / "stage.json") for name in STAGES if (out / name / "stage.json").exists()}
    log(json.dumps({k: v["seconds"] for k, v in summary.items()}))
    return summary
