"""End-to-end speed of the gated Class-Seg pipeline vs segmenting every slice vs a naive predict loop.

    python benchmarks/pipeline.py --data /work/shared/data/kaggle_3m --patients 3 \
        [--classifier saved_models/classifier.keras --segmenter saved_models/segmenter.keras]

Variants, all in the same process on the same slices (float32, 256 px for the data set):

* gated (keras / onnx): ``ClassSegPipeline.infer`` - one resize, batched compiled classifier call,
  segmenter only on slices with P(tumor) >= threshold, post-processing, resize back;
* segment all (keras / onnx): ``ClassSegPipeline.segment_timed`` - the segmenter on every slice;
* naive: a Python loop calling ``model.predict(x[None])`` per slice for the classifier and, for
  slices it passes, for the segmenter (same threshold, same post-processing).

"end to end" adds decoding the slices from disk (``classseg.data.read_image``). Without
``--classifier/--segmenter`` untrained models are built (weights=None; ``--backbone``/``--head``
for the classifier, ``build_resunet`` for the segmenter). An untrained classifier gives the same
P(tumor) for every slice, so its gate would pass all slices or none; then an "oracle gate" is used:
the classifier still runs on every slice (full cost) but its answer is replaced by the ground-truth
label, so the segmenter runs on the data set's real share of tumor slices. Predictions mean nothing
then; only the timings do.
Goals: <= 60 ms/slice on 2 cores at 256 px, >= 3x the naive loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from classseg.data import discover, read_image  # noqa: E402
from classseg.delivery.postprocess import postprocess  # noqa: E402
from classseg.models.predict import tumor_probability  # noqa: E402
from classseg.pipeline import ClassSegPipeline, resize_to  # noqa: E402
from classseg.utils.environment import environment_info  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/kaggle_3m"))
    parser.add_argument("--classifier", type=Path, default=None, help=".keras classifier (default: untrained)")
    parser.add_argument("--segmenter", type=Path, default=None, help=".keras segmenter (default: untrained ResUNet)")
    parser.add_argument("--backbone", default="mobilenetv2", help="backbone of the untrained classifier")
    parser.add_argument("--head", default="gap", choices=("gap", "paper"), help="head of the untrained classifier")
    parser.add_argument("--img-size", type=int, default=256, help="input size of untrained models")
    parser.add_argument("--patients", type=int, default=3, help="first N patients (sorted) of --data")
    parser.add_argument("--threshold", type=float, default=None, help="gate threshold (see module docstring)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per variant (median reported)")
    parser.add_argument("--naive-slices", type=int, default=64, help="slices timed for the naive loop")
    parser.add_argument("--backends", default="keras,onnx", help="comma list of keras, onnx")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def build_models(args: argparse.Namespace) -> tuple[object, object, str]:
    """The classifier and segmenter (paths or untrained keras models) and a label for them."""
    if args.classifier and args.segmenter:
        return args.classifier, args.segmenter, f"trained: {args.classifier}, {args.segmenter}"
    from classseg.models.classifier import build_classifier
    from classseg.models.resunet import build_resunet

    shape = (args.img_size, args.img_size, 3)
    classifier = build_classifier(args.backbone, shape, weights=None, head=args.head)
    segmenter = build_resunet(shape)
    label = (f"untrained (weights=None): {args.backbone} + {args.head} head ({classifier.count_params():,} params), "
             f"ResUNet ({segmenter.count_params():,} params), {args.img_size} px")
    return classifier, segmenter, label


class OracleGate:
    """Runs the real classifier (same cost) but answers with the ground-truth labels, in call order."""

    def __init__(self, runner, labels: np.ndarray) -> None:
        self.runner, self.labels, self.pos = runner, labels.astype(np.float32), 0
        self.input_size = runner.input_size

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.runner(x)  # the cost of the real classifier
        y = self.labels[self.pos:self.pos + len(x)]
        self.pos = (self.pos + len(x)) % len(self.labels)
        return {"class": np.stack([1 - y, y], axis=1)}


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds (all threads) of ``fn()``.

    CPU time is reported too because the shared development machine is often oversubscribed:
    wall time then includes waiting for other processes, CPU time much less so.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return float(np.median(walls)), float(np.median(cpus))


def naive_loop(classifier, segmenter, images: list[np.ndarray], threshold: float, config,
               oracle: np.ndarray | None = None) -> None:
    """One ``model.predict`` per slice (the way notebooks usually do it); ``oracle`` overrides the verdicts."""
    c_size, s_size = classifier.input_shape[1:3], segmenter.input_shape[1:3]
    for i, image in enumerate(images):
        x = resize_to(image, c_size).astype(np.float32)[None]
        p = tumor_probability(classifier.predict(x, verbose=0))[0]
        if (p if oracle is None else oracle[i]) >= threshold:
            xs = resize_to(image, s_size).astype(np.float32)[None]
            mask = postprocess(segmenter.predict(xs, verbose=0)[0], config)[..., 0]
            cv2.resize(mask, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)


def rate(seconds: tuple[float, float], n: int) -> dict[str, float]:
    wall, cpu = seconds
    return {"ms_per_slice": round(1000 * wall / n, 2), "slices_per_s": round(n / wall, 1),
            "cpu_ms_per_slice": round(1000 * cpu / n, 2)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    df = discover(args.data, require_masks=True)
    patients = sorted(df["patient_id"].unique())[: args.patients]
    df = df[df["patient_id"].isin(patients)].reset_index(drop=True)
    paths = list(df["image_path"])
    images = [read_image(p) for p in paths]
    tumor_share = float(df["tumor"].astype(bool).mean())
    n = len(images)
    classifier, segmenter, label = build_models(args)
    if not isinstance(classifier, keras.Model):
        from classseg.models.export import load_model

        classifier, segmenter = load_model(classifier), load_model(segmenter)

    env = environment_info()
    machine = {"cpu": env["cpu"], "cpu_count": env["cpu_count"], "available_cores": len(os.sched_getaffinity(0)),
               "loadavg_1min_at_start": os.getloadavg()[0],
               "tf_intra_op_threads (0 = all)": tf.config.threading.get_intra_op_parallelism_threads(),
               "tensorflow": env["tensorflow"], "onnxruntime": env["onnxruntime"], "gpus": env["gpus"]}
    info = {"machine": machine,
            "models": label, "data": f"{args.data}: first {len(patients)} patients, {n} slices "
                                      f"({tumor_share:.1%} tumor), {images[0].shape[1]}x{images[0].shape[0]} px",
            "dtype": "float32", "batch_size": args.batch_size, "repeats": args.repeats}
    print(json.dumps(info, indent=2))

    oracle = None if args.classifier else df["tumor"].astype(bool).to_numpy().astype(np.float32)
    if args.threshold is not None:
        threshold, how = args.threshold, "given"
    elif oracle is not None:
        threshold, how = 0.5, "oracle gate (ground-truth verdicts, classifier cost kept; untrained models)"
    else:
        threshold, how = ClassSegPipeline(args.classifier, args.segmenter).threshold, "sidecar / 0.5"
    keras_pipe = ClassSegPipeline(classifier, segmenter, threshold=threshold, batch_size=args.batch_size)
    keras_pipe.warmup()
    results: dict[str, dict] = {}
    read_s = median_time(lambda: [read_image(p) for p in paths], args.repeats)
    results["read slices from disk"] = rate(read_s, n)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    pipes = {"keras": keras_pipe} if "keras" in backends else {}
    if "onnx" in backends:
        try:
            from classseg.models.export import export_onnx  # noqa: F401

            tmp = Path(tempfile.mkdtemp(prefix="classseg_bench_onnx_"))
            print("exporting both models to ONNX (tf2onnx, parity-checked) ...", flush=True)
            pipes["onnx"] = ClassSegPipeline(classifier, segmenter, threshold=threshold,
                                             batch_size=args.batch_size, backend="onnx", onnx_dir=tmp)
            pipes["onnx"].warmup()
        except ImportError as err:
            print(f"skipping the onnx backend: classseg.models.export is not available ({err})")
    if oracle is not None:
        for pipe in pipes.values():
            pipe._classifier = OracleGate(pipe._classifier, oracle)
    passed = None
    for backend, pipe in pipes.items():
        out = pipe.infer(images)
        passed = int(out.passed.sum()) if passed is None else passed
        print(f"[{backend}] gate passes {int(out.passed.sum())}/{n} slices at threshold {threshold:.4g}")
        gated_s = median_time(lambda p=pipe: p.infer(images), args.repeats)
        all_s = median_time(lambda p=pipe: p.segment_timed(images), args.repeats)
        results[f"gated ({backend})"] = rate(gated_s, n)
        with_read = (gated_s[0] + read_s[0], gated_s[1] + read_s[1])
        results[f"gated end to end incl. reading ({backend})"] = rate(with_read, n)
        results[f"segment every slice ({backend})"] = rate(all_s, n)

    k = min(args.naive_slices, n)
    naive_loop(classifier, segmenter, images[:2], threshold, keras_pipe.postprocess_config, oracle)  # warm-up
    naive_s = median_time(lambda: naive_loop(classifier, segmenter, images[:k], threshold,
                                             keras_pipe.postprocess_config, oracle), 1)
    results[f"naive model.predict loop (keras, first {k} slices)"] = rate(naive_s, k)

    print(f"\nthreshold {threshold:.4g} ({how}); gate passes {passed}/{n} slices")
    width = max(len(name) for name in results)
    print(f"{'variant'.ljust(width)}  ms/slice  slices/s  CPU ms/slice (all threads)")
    for name, r in results.items():
        print(f"{name.ljust(width)}  {r['ms_per_slice']:8.2f}  {r['slices_per_s']:8.1f}  {r['cpu_ms_per_slice']:8.2f}")
    ms = {name: r["ms_per_slice"] for name, r in results.items()}
    naive_ms = ms[f"naive model.predict loop (keras, first {k} slices)"]
    ratios = {}
    for backend in pipes:
        gated = ms[f"gated ({backend})"]
        ratios[f"naive / gated ({backend})"] = round(naive_ms / gated, 2)
        ratios[f"segment all / gated ({backend})"] = round(ms[f"segment every slice ({backend})"] / gated, 2)
    if len(pipes) == 2:
        ratios["keras / onnx (gated)"] = round(ms["gated (keras)"] / ms["gated (onnx)"], 2)
    print("\nratios (> 1 = the second is faster):")
    for name, value in ratios.items():
        print(f"  {name}: {value}")
    best = min(ms[f"gated ({b})"] for b in pipes) if pipes else float("nan")
    print(f"\ngoals: <= 60 ms/slice gated -> {best:.1f} ms/slice; >= 3x naive -> "
          f"{max(ratios.get(f'naive / gated ({b})', 0) for b in pipes):.1f}x  (load average during run: "
          f"{os.getloadavg()[0]:.2f} on {info['machine']['available_cores']} cores)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**info, "threshold": threshold, "threshold_how": how, "passed": passed,
                                         "results": results, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
