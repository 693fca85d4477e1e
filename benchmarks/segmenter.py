"""Benchmark the ResUNet segmenter: training and inference milliseconds per slice on this machine.

Measures, for batch sizes 1 and 16 (default) at 256 x 256:

* training: one compiled ``train_on_batch`` step (Adam, Focal Tversky loss), ms per slice;
* inference: ``model(x, training=False)`` inside a ``tf.function`` (compiled graph) vs
  ``model.predict(x)`` (Keras' loop, which re-enters its own compiled function per call).

Each figure is the median of ``--repeats`` timed runs after ``--warmup`` untimed ones. Inputs are
random 0..255 pixels unless ``--data DIR`` is given, in which case real slices are read from a
kaggle_3m-style folder (e.g. /work/shared/data/kaggle_3m). Weights are random (the timing does not
depend on them). Usage::

    python benchmarks/segmenter.py [--data /work/shared/data/kaggle_3m] [--img-size 256] [--batches 1 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _median_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _inputs(args: argparse.Namespace, n: int):
    import numpy as np

    if args.data:
        from classseg.data import discover, load_arrays

        df = discover(args.data)
        df = df[df["tumor"].astype(bool)].head(n)
        arrays = load_arrays(df, args.img_size, progress=False)
        reps = int(np.ceil(n / max(len(arrays), 1)))
        images = np.concatenate([arrays.images] * reps)[:n].astype("float32")
        masks = np.concatenate([arrays.masks] * reps)[:n].astype("float32")
        return images, masks, f"real slices from {args.data} ({len(arrays)} distinct)"
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (n, args.img_size, args.img_size, 3)).astype("float32")
    masks = (rng.uniform(size=(n, args.img_size, args.img_size, 1)) > 0.9).astype("float32")
    return images, masks, "random pixels"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="kaggle_3m-style folder for real slices (default: random pixels)")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from classseg.models.losses import FocalTverskyLoss
    from classseg.models.predict import KerasRunner
    from classseg.models.resunet import build_resunet
    from classseg.utils.environment import environment_info

    env = environment_info()
    print("machine: " + ", ".join(f"{k}={env[k]}" for k in ("cpu", "cpu_count", "platform", "python",
                                                               "tensorflow", "keras", "gpus")))
    print(f"threads: intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}, "
          f"inter-op {tf.config.threading.get_inter_op_parallelism_threads() or 'auto'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    images, masks, source = _inputs(args, max(args.batches))
    model = build_resunet((args.img_size, args.img_size, 3))
    model.compile(optimizer=keras.optimizers.Adam(0.05, epsilon=0.1), loss=FocalTverskyLoss())
    print(f"model: ResUNet {model.count_params():,} params, random weights; input {args.img_size}x{args.img_size}; "
          f"{source}; median of {args.repeats} runs after {args.warmup} warm-up")

    infer = KerasRunner(model)  # the compiled call training, selection and the pipeline predict with
    print(f"{'batch':>5} {'train ms/slice':>15} {'tf.function ms/slice':>21} {'predict ms/slice':>17}")
    for b in args.batches:
        x, y = tf.constant(images[:b]), tf.constant(masks[:b])
        train = float("nan")
        if not args.skip_train:
            train = _median_ms(lambda x=x, y=y: model.train_on_batch(x, y), args.repeats, args.warmup) / b
        graph = _median_ms(lambda x=x: infer(x), args.repeats, args.warmup) / b
        pred = _median_ms(lambda x=x, b=b: model.predict(x, batch_size=b, verbose=0), args.repeats, args.warmup) / b
        print(f"{b:>5} {train:>15.1f} {graph:>21.1f} {pred:>17.1f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (CPU shared with other processes inflates timings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
