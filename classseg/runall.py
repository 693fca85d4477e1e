"""``classseg run-all``: split -> phase 1 -> phase 2 -> phase 3 -> joint model -> report, on one split file.

Each stage writes into its own folder under the run folder and, when it has finished, a
``stage.json`` marker (settings + wall time). A stage whose marker exists is not redone, so an
interrupted run resumes where it stopped; delete a stage folder to redo it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
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


def _stage(out: Path, name: str, settings: dict[str, Any], work: Callable[[Path], Any], log: Callable) -> bool:
    """Run ``work(stage_dir)`` unless the stage's marker exists; return True when it ran."""
    folder = out / name
    marker = folder / "stage.json"
    if marker.exists():
        log(f"[{name}] done earlier ({marker}); skipping")
        return False
    folder.mkdir(parents=True, exist_ok=True)
    log(f"[{name}] running ...")
    start = time.perf_counter()
    work(folder)
    seconds = round(time.perf_counter() - start, 1)
    write_json(marker, {"stage": name, "seconds": seconds, "settings": settings})
    log(f"[{name}] finished in {seconds:.0f} s")
    return True


def run_all(data_dir: str | Path, out_dir: str | Path, profile: RunAllProfile,
            splits_path: str | Path | None = None, strategy: Any = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage on one split file; return a summary (stage folders, seconds, headline figures)."""
    from classseg import data as cdata

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir)
    settings = asdict(profile)
    split_file = out / "split" / "splits.csv"

    def make_split(folder: Path) -> None:
        if splits_path:
            splits = cdata.load_splits(splits_path)
        else:
            splits = cdata.split_patients(cdata.discover(data_dir), profile.fractions, seed=profile.seed)
        cdata.save_splits(splits, folder / "splits.csv")

    _stage(out, "split", {"splits_path": str(splits_path) if splits_path else None, "seed": profile.seed,
                          "fractions": profile.fractions}, make_split, log)

    def phase1(folder: Path) -> None:
        from classseg.training.classifiers import ClassifierConfig, train_classifiers

        config = ClassifierConfig(backbones=tuple(profile.backbones), weights=profile.weights,
                                  img_size=profile.cls_img_size, head=profile.cls_head, epochs=profile.cls_epochs,
                                  repeats=profile.repeats, seed=profile.seed)
        train_classifiers(config, data_dir, split_file, folder, strategy=strategy)

    _stage(out, "phase1", settings, phase1, log)

    def phase2(folder: Path) -> None:
        from classseg.training.segmenter import SegmenterConfig, train_segmenter

        config = SegmenterConfig(img_size=profile.seg_img_size, epochs=profile.seg_epochs,
                                 batch_size=profile.seg_batch_size, seed=profile.seed)
        train_segmenter(config, data_dir, split_file, folder, strategy=strategy)

    _stage(out, "phase2", settings, phase2, log)

    def phase3(folder: Path) -> None:
        from classseg.pipeline import main as pipeline_main
        from classseg.training.classifiers import gate_model_path

        gate = read_json(out / "phase1" / "results.json")["gate"]
        test_dir = link_patients(data_dir, cdata.load_splits(split_file), "test", folder / "test_patients")
        code = pipeline_main(["--test-dir", str(test_dir),
                              "--classifier", str(gate_model_path(out / "phase1" / "results.json")),
                              "--segmenter", str(out / "phase2" / "segmenter.keras"),
                              "--threshold", str(gate.get("threshold", 0.5)),
                              "--out", str(folder / "predictions")])
        if code != 0:
            raise RuntimeError(f"phase 3 pipeline failed with exit code {code}")

    _stage(out, "phase3", settings, phase3, log)

    def joint(folder: Path) -> None:
        from classseg.training.joint import JointConfig, train_joint

        config = JointConfig(weights=profile.weights, img_size=profile.joint_img_size, epochs=profile.joint_epochs,
                             batch_size=profile.joint_batch_size, seed=profile.seed)
        train_joint(config, data_dir, split_file, folder, strategy=strategy)

    _stage(out, "joint", settings, joint, log)

    def report(folder: Path) -> None:
        from classseg.report import write_report

        write_report(out, folder)

    _stage(out, "report", settings, report, log)
    write_manifest(out, command="run-all", profile=settings, data_dir=str(data_dir), split_file=str(split_file))
    summary = {name: read_json(out / name / "stage.json") for name in STAGES if (out / name / "stage.json").exists()}
    log(json.dumps({k: v["seconds"] for k, v in summary.items()}))
    return summary
