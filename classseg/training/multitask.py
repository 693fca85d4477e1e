"""Joint vs two-stage vs single-task at equal footing (issue 11): one architecture, one split, one budget.

Every arm is seed 002's ResUNet with a class head (:func:`classseg.models.resunet.build_resunet_joint`),
trained from scratch (or from ``init``) on the same patient-level split for the same epochs, with the same
data, augmentation (the segmenter recipe's), optimiser (AdamW, cosine decay) and evaluation
(:func:`classseg.training.joint.train_joint`); only the loss weights of seed 000's
``L = lambda_cls * CE + lambda_seg * Dice`` (1.0, 1.5) differ:

* ``seg_only`` (lambda_cls = 0): the single-task segmenter, verdict "mask non-empty";
* ``cls_only`` (lambda_seg = 0): the single-task classifier;
* ``two_stage``: seed 002's phase 3 formed from those two runs' saved predictions (no extra training;
  the segmenter's masks emptied where the classifier says no tumor); it costs both runs' minutes;
* ``joint``: fixed weights (seed 000); ``joint_freeze`` / ``joint_dynamic``: seed 001's schedules;
* ``joint_multiscale``: fixed weights, seed 004's multi-scale class head.

The main rows use P(tumor) >= 0.5 for every arm (seed 000); the ``(gate chosen on val)`` rows give every gated
arm the pipeline's val-based choice of threshold and rule (:func:`val_gated_run`), so no arm gets a
selection the others lack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Arm -> JointConfig overrides (see the module docstring).
ARMS: dict[str, dict[str, Any]] = {
    "seg_only": dict(lambda_cls=0.0),
    "cls_only": dict(lambda_seg=0.0),
    "joint": dict(schedule="fixed"),
    "joint_freeze": dict(schedule="freeze"),
    "joint_dynamic": dict(schedule="dynamic"),
    "joint_multiscale": dict(schedule="fixed", multiscale_head=True),
}
TWO_STAGE = "two_stage"


@dataclass
class MultitaskConfig:
    """Settings shared by every arm. Defaults: the CPU budget of docs/multitask.md (96 px, width 0.5,
    9 epochs; 9 = 3 x 3 so seed 001's freeze schedule gets 3 epochs per phase). ``lr``: AdamW peak
    (seed 000's 1e-4 is for an ImageNet encoder; these start from scratch, as the segmenter recipe)."""

    arms: tuple[str, ...] = tuple(ARMS)
    seeds: tuple[int, ...] = (0, 1, 2)
    img_size: int = 96
    width: float = 0.5
    epochs: int = 9
    batch_size: int = 32
    lr: float = 2e-3
    init: str | None = None
    normalization: str | None = None  # None: the init model's card's, else raw (JointConfig.normalization)

    def __post_init__(self) -> None:
        unknown = set(self.arms) - set(ARMS)
        if unknown:
            raise ValueError(f"unknown arm(s) {sorted(unknown)}; choose from {', '.join(ARMS)}")


def arm_config(arm: str, seed: int, config: MultitaskConfig) -> Any:
    """The :class:`~classseg.training.joint.JointConfig` of one arm and seed."""
    from classseg.training.joint import JointConfig

    return JointConfig(architecture="resunet", weights=None, init=config.init, normalization=config.normalization,
                       width=config.width,
                       img_size=config.img_size, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                       augment=True, seed=seed, infer_batch=config.batch_size, **ARMS[arm])


def run_dir(out: str | Path, arm: str, seed: int) -> Path:
    """``OUT/<arm>_seed<k>``."""
    return Path(out) / f"{arm}_seed{seed}"


def train_arms(config: MultitaskConfig, data_dir: str | Path, splits_path: str | Path | None, out: str | Path,
               log: Callable[[str], None] = print, progress: bool = False) -> list[Path]:
    """Train every (seed, arm) not finished yet (seed-major, so an interrupted run leaves whole seeds);
    returns the run folders."""
    import time

    from classseg.training.joint import train_joint

    folders = []
    for seed in config.seeds:
        for arm in config.arms:
            folder = run_dir(out, arm, seed)
            folders.append(folder)
            if (folder / "metrics.json").is_file():
                log(f"[{arm} seed {seed}] done earlier ({folder})")
                continue
            start = time.perf_counter()
            m = train_joint(arm_config(arm, seed, config), data_dir, splits_path, folder, progress=progress)
            log(f"[{arm} seed {seed}] {time.perf_counter() - start:.0f} s; test accuracy {m.get('accuracy')}, "
                f"Dice per patient {m.get('dice_per_patient')}")
    return folders


def two_stage_run(out: str | Path, seed: int) -> Path | None:
    """``OUT/two_stage_seed<k>``: ``metrics.json`` / ``manifest.json`` of ``cls_only`` gating ``seg_only``
    (test and val, :func:`classseg.evaluation.delivered.two_stage_scores`); None until both runs exist."""
    from classseg.delivery.postprocess import PostprocessConfig
    from classseg.evaluation.delivered import read_predictions, two_stage_scores
    from classseg.evaluation.scores import read_truths
    from classseg.utils.jsonio import read_json, write_json

    cls_dir, seg_dir = run_dir(out, "cls_only", seed), run_dir(out, "seg_only", seed)
    if not ((cls_dir / "metrics.json").is_file() and (seg_dir / "metrics.json").is_file()):
        return None
    folder = run_dir(out, TWO_STAGE, seed)
    seg_m, cls_m = read_json(seg_dir / "metrics.json"), read_json(cls_dir / "metrics.json")
    pp = PostprocessConfig(**seg_m["postprocess_config"])
    results = {}
    for split in ("test", "val"):
        cls_p, seg_p = (read_predictions(d / f"predictions_{split}.npz") for d in (cls_dir, seg_dir))
        truths = read_truths(list(seg_p["mask_path"]))
        results[split] = two_stage_scores(cls_p, seg_p, truths, pp, gate_threshold=cls_m["threshold"])
    labels = {k: seg_m[k] for k in ("architecture", "img_size", "epochs", "seed", "split_file", "augment",
                                    "batch_size", "weights")}
    metrics = {"model": "two_stage_resunet", "kind": "pipeline_two_stage", **labels,
               "train_minutes": round(seg_m["train_minutes"] + cls_m["train_minutes"], 2),
               "params": seg_m["params"] + cls_m["params"],
               "ms_per_slice": seg_m["ms_per_slice"] + cls_m["ms_per_slice"],
               "made_from": [str(cls_dir), str(seg_dir)],
               "evaluated_on": "test split: the segmenter's masks (post-processed) emptied where the classifier's "
                               f"P(tumor) < {cls_m['threshold']}", **results["test"], "val": results["val"]}
    write_json(folder / "metrics.json", metrics)
    write_json(folder / "manifest.json", {"command": "classseg.training.multitask.two_stage_run",
                                          "kind": "pipeline_two_stage", **labels})
    return folder


def val_gated_run(out: str | Path, arm: str, seed: int) -> Path | None:
    """``OUT/<arm>_valgate_seed<k>``: the arm delivered with the gate threshold and rule chosen on its val
    predictions (:func:`classseg.training.selection.choose_gate`, the pipeline's selection: the class output
    gates only where it beats "mask non-empty" on val), scored on test. ``arm``: a joint arm (its own class
    output and mask) or ``two_stage`` (``cls_only`` gating ``seg_only``). None until the runs exist."""
    from classseg.delivery.postprocess import PostprocessConfig
    from classseg.delivery.rules import MaskDelivery
    from classseg.evaluation.delivered import delivered_scores, read_predictions
    from classseg.evaluation.scores import read_truths
    from classseg.training.selection import choose_gate
    from classseg.utils.jsonio import read_json, write_json

    pair = (("cls_only", "seg_only") if arm == TWO_STAGE else (arm, arm))
    dirs = [run_dir(out, a, seed) for a in pair]
    if not all((d / "metrics.json").is_file() for d in dirs):
        return None
    seg_m = read_json(dirs[1] / "metrics.json")
    pp = PostprocessConfig(**seg_m["postprocess_config"])
    preds = {split: [read_predictions(d / f"predictions_{split}.npz") for d in dirs] for split in ("val", "test")}
    (cls_val, seg_val), (cls_test, seg_test) = preds["val"], preds["test"]
    val_truths = read_truths(list(seg_val["mask_path"]))
    maps = MaskDelivery(seg_val["mask_prob"], [t.shape for t in val_truths], pp)  # the rule's delivery per cut
    choice, _ = choose_gate([t.any() for t in val_truths], cls_val["tumor_prob"], maps)
    threshold = choice["threshold"] if choice["threshold"] is not None else 0.5
    scores = delivered_scores(read_truths(list(seg_test["mask_path"])), seg_test["mask_prob"],
                              seg_test["patient_id"], pp, gate_prob=cls_test["tumor_prob"], gate_threshold=threshold,
                              rule=choice["rule"])
    source = read_json(run_dir(out, TWO_STAGE, seed) / "metrics.json") if arm == TWO_STAGE else seg_m
    folder = run_dir(out, f"{arm}_valgate", seed)
    labels = {k: source[k] for k in ("img_size", "epochs", "seed", "split_file", "weights", "train_minutes", "params")}
    write_json(folder / "metrics.json", {"model": f"{source['model']} (gate chosen on val)", "kind": "val_gated",
                                         **labels, "gate_choice": choice, **scores})
    return folder


def comparison_runs(config: MultitaskConfig, out: str | Path) -> list[Path]:
    """The finished run folders in table order (single-task, two-stage, joint variants), two-stage made."""
    order = [a for a in config.arms if a in ("seg_only", "cls_only")]
    if len(order) == 2:
        order.append(TWO_STAGE)
    order += [a for a in config.arms if a not in ("seg_only", "cls_only")]
    runs = []
    for arm in order:
        for seed in config.seeds:
            folder = two_stage_run(out, seed) if arm == TWO_STAGE else run_dir(out, arm, seed)
            if folder is not None and (folder / "metrics.json").is_file():
                runs.append(folder)
    for arm in order:  # the same deliverables with the gate threshold and rule chosen on val
        if arm in (TWO_STAGE, *[a for a in ARMS if a.startswith("joint")]):
            runs += [f for f in (val_gated_run(out, arm, seed) for seed in config.seeds) if f is not None]
    return runs


def caption(config: MultitaskConfig, splits_path: str | Path | None) -> str:
    """The table caption: architecture, size, epochs, split and seeds."""
    start = "from scratch" if not config.init else f"initialised from {config.init}"
    return (f"Joint vs two-stage vs single-task: one ResUNet (width {config.width}) {start}, {config.img_size} px, "
            f"{config.epochs} epochs, split {splits_path}; test patients, mean ± std over seeds "
            f"{', '.join(map(str, config.seeds))}")
