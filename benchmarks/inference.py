"""CPU inference speed: Keras (compiled ``model(x, training=False)`` in a tf.function) vs ONNX Runtime.

For each model (weights=None, random init: speed does not depend on weight values) the script
builds it, exports it with ``classseg.models.export.export_onnx`` (parity checked), then times batches of
random 0..255 pixels at batch 1 and 16, alternating Keras and ONNX calls so that both see the
same machine load. Both sides return NumPy arrays (host copy included).
Reports the median ms/slice over ``--repeats`` timed calls after warm-up, the speedup
keras/onnx (goal >= 1.5x) and machine info.

    python benchmarks/inference.py --models mobilenetv2_gap,resunet,joint --repeats 5

Models: ``mobilenetv2_gap`` / ``mobilenetv2_paper`` (phase-1 classifier, GAP or seed 002 dense
head; the paper head's Flatten-Dense export needs far more RAM, so it is not in the default
list), ``resnet50_gap``, ``resunet`` (seed 002 ResUNet) and ``joint`` (seed 000 ResNet-50 U-Net,
224 px).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from classseg.models.export import available_cores, export_onnx  # noqa: E402
from classseg.models.predict import KerasRunner, OnnxRunner  # noqa: E402
from classseg.reporting.tables import run_notes, to_markdown  # noqa: E402
from classseg.utils.environment import environment_info  # noqa: E402


def _classifier(backbone: str, head: str) -> Callable[[int], object]:
    def build(size: int):
        from classseg.models import build_classifier

        return build_classifier(backbone, (size, size, 3), weights=None, head=head)

    return build


def _resunet(size: int):
    from classseg.models import build_resunet

    return build_resunet((size, size, 3))


def _joint(size: int):
    from classseg.models import build_joint_model

    return build_joint_model((size, size, 3), weights=None)


#: name -> (builder(size) -> keras.Model, default image size)
MODELS: dict[str, tuple[Callable[[int], object], int]] = {
    "mobilenetv2_gap": (_classifier("mobilenetv2", "gap"), 256),
    "mobilenetv2_paper": (_classifier("mobilenetv2", "paper"), 256),
    "resnet50_gap": (_classifier("resnet50", "gap"), 256),
    "resunet": (_resunet, 256),
    "joint": (_joint, 224),
}


def peak_rss_gb() -> float:
    """Peak resident memory of this process (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def paired_median_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, float]:
    """Median wall time (ms) of each ``fn()``; calls alternate so that both see the same machine load."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_model(name: str, size: int, batches: list[int], repeats: int, warmup: int, threads: int,
                tmp: Path) -> list[dict]:
    """Build, export and time one model; one result row per batch size."""
    build, _ = MODELS[name]
    model = build(size)
    start = time.perf_counter()
    result = export_onnx(model, tmp / f"{name}.onnx", raise_on_failure=False)
    export_s = time.perf_counter() - start
    print(f"[{name}] exported in {export_s:.1f} s; parity max |diff| {result.max_abs_diff:.2g} "
          f"({'PASS' if result.passed else 'FAIL'})", flush=True)
    for note in result.notes:
        print(f"[{name}] {note}", flush=True)
    print(f"[{name}] peak RSS of this process so far: {peak_rss_gb():.2f} GB", flush=True)
    keras_runner, onnx_runner = KerasRunner(model), OnnxRunner(result.path, threads=threads)

    rows = []
    for batch in batches:
        x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
        x_tf = tf.constant(x)
        ms = paired_median_ms({
            "keras": lambda x_tf=x_tf: keras_runner(x_tf),  # outputs materialised as NumPy arrays
            "onnx": lambda x=x: onnx_runner(x),
        }, repeats, warmup)
        keras_ms, onnx_ms = ms["keras"], ms["onnx"]
        row = {"model": name, "img_size": size, "batch": batch, "params": int(model.count_params()),
               "keras_ms_per_slice": keras_ms / batch, "onnx_ms_per_slice": onnx_ms / batch,
               "speedup": keras_ms / onnx_ms, "parity_max_abs_diff": result.max_abs_diff}
        print(f"[{name}] batch {batch}: keras {row['keras_ms_per_slice']:.1f} ms/slice, "
              f"onnx {row['onnx_ms_per_slice']:.1f} ms/slice, speedup {row['speedup']:.2f}x", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenetv2_gap,resunet,joint",
                        help=f"comma list from {', '.join(MODELS)}")
    parser.add_argument("--batches", default="1,16", help="comma list of batch sizes")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per setting (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--size", type=int, default=None, help="image size for every model (default: 256, joint 224)")
    parser.add_argument("--threads", type=int, default=None, help="threads for both runtimes (default: all cores)")
    parser.add_argument("--json", help="also write the rows and machine info to this JSON file")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    threads = args.threads or available_cores()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    batches = [int(b) for b in args.batches.split(",")]
    env = environment_info()
    print(f"machine: {env['cpu']} | cores available {available_cores()} (os {env['cpu_count']}) | "
          f"threads {threads} | gpus {env['gpus'] or 'none'}")
    print(f"tensorflow {env['tensorflow']} keras {env['keras']} onnxruntime {env['onnxruntime']} "
          f"tf2onnx {env['tf2onnx']} | python {env['python']}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="classseg_bench_") as tmp:
        for name in names:
            size = args.size or MODELS[name][1]
            rows.extend(bench_model(name, size, batches, args.repeats, args.warmup, threads, Path(tmp)))
    df = pd.DataFrame(rows)
    notes = run_notes("n/a (random pixels)", "n/a", "none (random init)", df["img_size"], "n/a (untrained)",
                      extra=f"CPU only, {threads} threads; median of {args.repeats} calls after {args.warmup} "
                            "warm-up, keras and onnx calls alternating; "
                            "keras = tf.function(model(x, training=False)) + .numpy(); "
                            "onnx = onnxruntime CPUExecutionProvider, opset 17; speedup = keras / onnx.")
    print()
    shown = df.assign(parity_max_abs_diff=df["parity_max_abs_diff"].map(lambda v: f"{v:.1e}"))
    print(to_markdown(shown, "Inference ms/slice, Keras vs ONNX Runtime", notes, digits=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "environment": env, "threads": threads,
                                               "repeats": args.repeats, "warmup": args.warmup}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
