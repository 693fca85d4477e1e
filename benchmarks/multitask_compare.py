"""Joint vs two-stage vs single-task at equal footing (issue 11): one architecture, one split, one budget.

Every arm is the ResUNet of seed 002 with a class head (:func:`classseg.models.resunet.build_resunet_joint`),
trained from scratch on the same patient-level split, for the same epochs, with the same data,
augmentation (the segmenter recipe's), optimiser (AdamW, cosine) and evaluation; only the loss weights
differ:

* ``seg_only``      -- lambda_cls = 0: the single-task segmenter (verdict = mask non-empty);
* ``cls_only``      -- lambda_seg = 0: the single-task classifier;
* ``two_stage``     -- seed 002's phase 3 from those two runs (no extra training: masks of ``seg_only``
  emptied where ``cls_only`` says no tumor); it costs the two runs' minutes together;
* ``joint``         -- seed 000's loss 1.0 CE + 1.5 Dice, fixed weights;
* ``joint_freeze`` / ``joint_dynamic`` -- seed 001's loss-weight schedules on the same base weights;
* ``joint_multiscale`` -- fixed weights, seed 004's multi-scale class head.

Each (arm, seed) is a run folder ``OUT/<arm>_seed<k>`` (train-joint's outputs); a finished one is not
redone, so the script resumes. At the end ``classseg compare --aggregate`` writes the table (mean ± std
over seeds, Markdown + LaTeX + CSV) to ``--docs``. Run (the figures in docs/multitask.md)::

    python benchmarks/multitask_compare.py --data ../shared/data/kaggle_3m \\
        --splits data/splits/kaggle_3m_seed0.csv --out runs/multitask --docs docs/multitask
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ARMS: dict[str, dict] = {
    "seg_only": dict(lambda_cls=0.0),
    "cls_only": dict(lambda_seg=0.0),
    "joint": dict(schedule="fixed"),
    "joint_freeze": dict(schedule="freeze"),
    "joint_dynamic": dict(schedule="dynamic"),
    "joint_multiscale": dict(schedule="fixed", multiscale_head=True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/kaggle_3m", help="kaggle_3m folder")
    p.add_argument("--splits", default="data/splits/kaggle_3m_seed0.csv", help="patient-level split CSV")
    p.add_argument("--out", default="runs/multitask", help="folder of the run folders")
    p.add_argument("--docs", default="docs/multitask", help="stem of the table files (.md/.tex/.csv)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--img-size", type=int, default=96)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak lr (seed 000's 1e-4 is for a pretrained "
                                                          "encoder; these models start from scratch)")
    p.add_argument("--table-only", action="store_true", help="only (re)write the two-stage rows and the table")
    return p.parse_args(argv)


def run_arm(args: argparse.Namespace, arm: str, seed: int) -> Path:
    from classseg.training.joint import JointConfig, train_joint

    out = Path(args.out) / f"{arm}_seed{seed}"
    if (out / "metrics.json").is_file():
        print(f"[{arm} seed {seed}] done earlier ({out})", flush=True)
        return out
    config = JointConfig(architecture="resunet", weights=None, width=args.width, img_size=args.img_size,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, augment=True, seed=seed,
                         infer_batch=32, **ARMS[arm])
    start = time.perf_counter()
    m = train_joint(config, args.data, args.splits, out, progress=False)
    print(f"[{arm} seed {seed}] {time.perf_counter() - start:.0f} s; test accuracy {m.get('accuracy')}, "
          f"Dice per patient {m.get('dice_per_patient')}", flush=True)
    return out


def two_stage(args: argparse.Namespace, seed: int) -> Path | None:
    """``two_stage_seed<k>``: metrics.json / manifest.json of cls_only gating seg_only (test and val)."""
    from classseg.evaluation.delivered import read_predictions, two_stage_scores
    from classseg.evaluation.scores import read_truths
    from classseg.jsonio import read_json, write_json
    from classseg.postprocess import PostprocessConfig

    cls_dir, seg_dir = (Path(args.out) / f"{a}_seed{seed}" for a in ("cls_only", "seg_only"))
    if not ((cls_dir / "metrics.json").is_file() and (seg_dir / "metrics.json").is_file()):
        return None
    out = Path(args.out) / f"two_stage_seed{seed}"
    seg_m, cls_m = read_json(seg_dir / "metrics.json"), read_json(cls_dir / "metrics.json")
    pp = PostprocessConfig(**seg_m["postprocess_config"])
    results = {}
    for split in ("test", "val"):
        cls_p, seg_p = (read_predictions(d / f"predictions_{split}.npz") for d in (cls_dir, seg_dir))
        truths = read_truths(list(seg_p["mask_path"]), [(1, 1)] * len(seg_p["mask_path"]))
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
    write_json(out / "metrics.json", metrics)
    write_json(out / "manifest.json", {"command": "benchmarks/multitask_compare.py (two-stage combination)",
                                       "kind": "pipeline_two_stage", **labels})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from classseg.environment import environment_info, machine_label

    print(f"machine: {machine_label(environment_info())}; settings: {json.dumps(vars(args))}", flush=True)
    if not args.table_only:
        for seed in args.seeds:  # seed-major: an interrupted run leaves whole seeds
            for arm in args.arms:
                run_arm(args, arm, seed)
    runs = []
    for arm in [*args.arms[:2], "two_stage", *args.arms[2:]] if "seg_only" in args.arms else args.arms:
        for seed in args.seeds:
            folder = two_stage(args, seed) if arm == "two_stage" else Path(args.out) / f"{arm}_seed{seed}"
            if folder is not None and (folder / "metrics.json").is_file():
                runs.append(str(folder))
    from classseg.cli import main as cli

    caption = (f"Joint vs two-stage vs single-task, one ResUNet (width {args.width}) from scratch, "
               f"{args.img_size} px, {args.epochs} epochs, split {args.splits}: test patients, mean ± std "
               f"over seeds {', '.join(map(str, args.seeds))}")
    return cli(["compare", *runs, "--out", str(Path(args.docs).parent), "--name", Path(args.docs).name,
                "--aggregate", "--caption", caption])


if __name__ == "__main__":
    sys.exit(main())
