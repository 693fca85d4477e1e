"""Cached-feature head training vs end-to-end training of the same frozen classifier.

Phase 1 freezes the backbone, so its output for a slice never changes: computing it once and
training the head on the cached features must give the same model as running the backbone in
every epoch, much faster. This script measures both on real slices, same head, same machine,
same run:

    cached     = feature extraction (every slice once) + N epochs of head training
    end-to-end = N epochs of model.fit on the images (backbone forward pass in every step)

    python benchmarks/phase1_cache.py --data /work/shared/data/kaggle_3m \
        [--backbone mobilenetv2] [--img-size 128] [--slices 200] [--epochs 20] [--head paper]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import keras  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall time."""

    def on_train_begin(self, logs=None):
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/work/shared/data/kaggle_3m")
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=200, help="random slices (seeded), tumor share as in data")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--head", choices=("paper", "gap"), default="paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from classseg.data import classification_dataset, discover, load_arrays
    from classseg.models.classifier import build_classifier, head_of, split_head
    from classseg.training.classifiers import extract_features, feature_extractor
    from classseg.utils.environment import environment_info
    from classseg.utils.jsonio import write_json
    from classseg.utils.seeding import set_seed

    env = environment_info()
    load = os.getloadavg()
    print("machine:", json.dumps({k: env[k] for k in ("cpu", "cpu_count", "platform", "tensorflow", "keras",
                                                      "gpus")}))
    print(f"load average at start (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    df = discover(args.data)
    df = df.sample(n=min(args.slices, len(df)), random_state=args.seed).reset_index(drop=True)
    arrays = load_arrays(df, args.img_size, progress=False)
    x, y = arrays.images, arrays.labels
    print(f"data: {len(x)} slices from {args.data} ({int(y.sum())} tumor), {args.img_size}px; "
          f"{args.backbone} weights=None (timing does not depend on the weights' values), head={args.head}, "
          f"{args.epochs} epochs, batch {args.batch_size}")
    onehot = tf.one_hot(y, 2)

    def fresh():
        set_seed(args.seed)
        model = build_classifier(args.backbone, (args.img_size,) * 2 + (3,), weights=None, head=args.head)
        return model

    # cached features: extraction once + N epochs of the head
    model = fresh()
    t0 = time.perf_counter()
    feats = extract_features(model, x, args.batch_size, progress=False, step=feature_extractor(model))
    t_extract = time.perf_counter() - t0
    _, trainable = split_head(head_of(model))
    trainable.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    ds = (tf.data.Dataset.from_tensor_slices((feats, onehot)).shuffle(len(feats), seed=args.seed)
          .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
    timer_c = EpochTimer()
    t1 = time.perf_counter()
    hist_c = trainable.fit(ds, epochs=args.epochs, verbose=0, callbacks=[timer_c], shuffle=False)
    t_fit = time.perf_counter() - t1
    t_cached = t_extract + t_fit

    # end-to-end: the same frozen classifier fitted on images
    model = fresh()
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    ds_img = classification_dataset(x, y, args.batch_size, shuffle=True, seed=args.seed)
    timer_e = EpochTimer()
    t0 = time.perf_counter()
    hist_e = model.fit(ds_img, epochs=args.epochs, verbose=0, callbacks=[timer_e], shuffle=False)
    t_e2e = time.perf_counter() - t0

    per_epoch_c = float(np.median(timer_c.times[1:] or timer_c.times))
    per_epoch_e = float(np.median(timer_e.times[1:] or timer_e.times))
    result = {
        "backbone": args.backbone, "head": args.head, "img_size": args.img_size, "slices": len(x),
        "epochs": args.epochs, "batch_size": args.batch_size,
        "cached_total_s": t_cached, "cached_extract_s": t_extract, "cached_fit_s": t_fit,
        "cached_epoch_median_s": per_epoch_c,
        "end_to_end_total_s": t_e2e, "end_to_end_epoch_median_s": per_epoch_e,
        "speedup_total": t_e2e / t_cached,
        "final_loss_cached": float(hist_c.history["loss"][-1]),
        "final_loss_end_to_end": float(hist_e.history["loss"][-1]),
        "load_avg_start": load, "load_avg_end": os.getloadavg(), "machine": env,
    }
    print(f"cached     : {t_cached:8.1f} s  (extraction {t_extract:.1f} s + {args.epochs} epochs {t_fit:.1f} s; "
          f"median epoch {per_epoch_c:.2f} s)")
    print(f"end-to-end : {t_e2e:8.1f} s  ({args.epochs} epochs; median epoch {per_epoch_e:.2f} s)")
    print(f"speed-up   : {result['speedup_total']:.1f}x for {args.epochs} epochs (goal >= 15x); "
          f"per epoch after the first: {per_epoch_e / per_epoch_c:.1f}x")
    print(f"final training loss: cached {result['final_loss_cached']:.4f}, "
          f"end-to-end {result['final_loss_end_to_end']:.4f} (same seed, init and shuffle order)")
    end = result["load_avg_end"]
    print(f"load average at end (1/5/15 min): {end[0]:.2f} {end[1]:.2f} {end[2]:.2f} (machine shared)")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
