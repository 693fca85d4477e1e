"""Peak memory of ``python -m classseg.pipeline`` as the folder grows (issue 20: streaming).

    python benchmarks/pipeline_memory.py [--data data/sample/kaggle_3m] [--factors 1,3,10] [--no-overlays]
        [--one-folder] [--patients N]

For each factor k a temporary folder holds k copies of every patient of ``--data`` under other names
(``<patient>_copy<j>``; files hard-linked where the file system allows, else copied), so the pipeline sees
k times the patients and slices, each patient as large as before (``--one-folder``: every copy of every
patient in one folder instead, i.e. one patient of k x 282 slices: the case streaming cannot split,
since a patient's slices are standardised and 3D-filtered together). The pipeline runs in a child process
with the shipped models (or ``--classifier/--segmenter``); its peak resident set size is read from the
kernel with ``os.wait4`` (``ru_maxrss`` of that one child). Printed: slices, peak RSS, the ratio to the
1x run, wall time, and whether the figures of the copies equal those of 1x (every copy is scored the
same, so accuracy and the per-patient Dice must not move); then the machine.

``--patients N`` takes only the first N patients of ``--data`` (a short run on a busy machine).

Acceptance (issue 20): peak RSS at 3x within 1.3x of 1x. Issue 28's stricter bound, the largest factor
(10x) within 1.2x of 1x, for patient folders and for ``--one-folder``, is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "sample" / "kaggle_3m")
    parser.add_argument("--factors", default="1,3,10", help="comma list of copy factors (first = the reference)")
    parser.add_argument("--classifier", type=Path, default=None)
    parser.add_argument("--segmenter", type=Path, default=None)
    parser.add_argument("--no-overlays", action="store_true")
    parser.add_argument("--one-folder", action="store_true", help="all copies in one folder (one patient)")
    parser.add_argument("--patients", type=int, default=None, help="only the first N patients of --data")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_copies(data: Path, factor: int, dest: Path, one_folder: bool = False, limit: int | None = None) -> int:
    """``factor`` copies of every patient folder of ``data`` (the first ``limit`` only, when given) under
    ``dest`` (all in ``dest/all`` with ``one_folder``); returns the image count."""
    patients = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))[:limit]
    n = 0
    for j in range(factor):
        for patient in patients:
            target = dest / (patient.name if j == 0 else f"{patient.name}_copy{j}")
            folder = dest / "all" if one_folder else target
            folder.mkdir(parents=True, exist_ok=True)
            for f in sorted(patient.iterdir()):
                if f.is_file():
                    name = f.name if j == 0 else f.name.replace(patient.name, target.name, 1)
                    _link_or_copy(f, folder / name)
                    n += not f.stem.endswith("_mask")
    return n


def run_pipeline(test_dir: Path, out: Path, args: argparse.Namespace) -> dict:
    """The pipeline in a child process; its own peak RSS (``os.wait4``), wall time and exit status."""
    cmd = [sys.executable, "-m", "classseg.pipeline", "--test-dir", str(test_dir), "--out", str(out)]
    if args.classifier:
        cmd += ["--classifier", str(args.classifier)]
    if args.segmenter:
        cmd += ["--segmenter", str(args.segmenter)]
    if args.no_overlays:
        cmd.append("--no-overlays")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"exit": proc.returncode, "wall_s": time.perf_counter() - start,
            "peak_rss_mb": usage.ru_maxrss / 1024.0}  # Linux: kilobytes


def figures(out: Path) -> dict:
    path = out / "metrics.json"
    if not path.is_file():
        return {}
    gated = json.loads(path.read_text())["gated"]
    return {k: gated.get(k) for k in ("accuracy", "sensitivity", "specificity", "dice_tumor_slices",
                                      "dice_per_patient", "hd95_detected_px")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    factors = [int(f) for f in args.factors.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="classseg_mem_") as tmp:
        for factor in factors:
            data = Path(tmp) / f"data_{factor}x"
            slices = make_copies(args.data, factor, data, args.one_folder, args.patients)
            result = run_pipeline(data, Path(tmp) / f"out_{factor}x", args)
            result.update(factor=factor, slices=slices, figures=figures(Path(tmp) / f"out_{factor}x"))
            rows.append(result)
            shutil.rmtree(Path(tmp) / f"out_{factor}x", ignore_errors=True)
            shutil.rmtree(data, ignore_errors=True)
            print(f"{factor}x: {slices} slices, peak RSS {result['peak_rss_mb']:.0f} MB, "
                  f"{result['wall_s']:.0f} s, exit {result['exit']}", flush=True)
    ref = rows[0]
    print("\n| copies | slices | peak RSS (MB) | vs 1x | wall (s) | figures equal 1x |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        r["ratio"] = r["peak_rss_mb"] / ref["peak_rss_mb"]
        same = bool(r["figures"]) and r["figures"].keys() == ref["figures"].keys() and all(
            (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b)))
            for a, b in ((r["figures"][k], ref["figures"][k]) for k in ref["figures"]))  # means of k copies
        print(f"| {r['factor']}x | {r['slices']} | {r['peak_rss_mb']:.0f} | {r['ratio']:.2f} | {r['wall_s']:.0f} | "
              f"{'yes' if same else 'NO'} |")
    from classseg.utils.environment import environment_info

    env = environment_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\nmachine: {env.get('cpu')} ({env.get('cpu_count')} CPUs), load average {load}, python "
          f"{env.get('python')}, tensorflow {env.get('tensorflow')}, numpy {env.get('numpy')}")
    verdict = all(r["ratio"] <= 1.3 for r in rows if r["factor"] <= 3)
    print(f"acceptance (3x peak within 1.3x of 1x): {'met' if verdict else 'NOT met'}")
    largest = max(rows, key=lambda r: r["factor"])
    layout = "one folder" if args.one_folder else "patient folders"
    print(f"issue 28 ({largest['factor']}x peak within 1.2x of 1x, {layout}): "
          f"{'met' if largest['ratio'] <= 1.2 else 'NOT met'} ({largest['ratio']:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "environment": env, "load": load}, indent=2, default=str))
    return 0 if verdict and all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
