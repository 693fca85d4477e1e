"""Training throughput of the segmenter recipe: the real loop against the model's compute limit.

Issue 10, item 5. In one run, on the same model, batch size and image size:

* **limit**: ``model.fit`` on one in-memory float32 tensor (already normalised, no augmentation,
  no input pipeline): what the model itself costs per slice on this machine;
* **real loop**: ``model.fit`` on :class:`classseg.data.sequence.ArraySequence` with the recipe's
  augmentation (flips, rot90, affine, elastic, intensity, FLAIR substitution) in ``--workers`` threads,
  exactly as ``classseg train-segmenter`` trains.

Each figure is the median slices/s over ``--repeats`` epochs after one warm-up epoch (compilation);
the ratio real / limit is what augmentation leaves of the compute (aim >= 0.9). Real slices from
``--data`` (a kaggle_3m-style folder; default the bundled sample) at ``--img-size``. Usage::

    python benchmarks/train_speed.py [--data /work/shared/data/kaggle_3m] [--img-size 128] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _EpochTimer:
    def __init__(self) -> None:
        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.times: list[float] = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._t)

        self.callback = Timer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="kaggle_3m-style folder (default: bundled sample)")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--slices", type=int, default=256, help="slices per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per arm")
    parser.add_argument("--workers", type=int, default=2, help="augmentation threads (train-segmenter default 2)")
    args = parser.parse_args()

    from functools import partial

    import keras
    import numpy as np

    from classseg import data as cdata
    from classseg.data.augment import RECIPE_AUGMENT, build_augmenter
    from classseg.data.sequence import ArraySequence
    from classseg.models.losses import get_loss
    from classseg.models.resunet import build_resunet
    from classseg.training.segmenter import model_inputs
    from classseg.utils.environment import environment_info

    frame = cdata.discover(args.data or cdata.DEFAULT_DATA_DIR).head(args.slices).reset_index(drop=True)
    arrays = cdata.load_arrays(frame, args.img_size, progress=False)
    x = model_inputs(arrays, "patient_zscore")
    y = arrays.masks.astype(np.float32)
    n = len(x)

    def model():
        m = build_resunet((args.img_size, args.img_size, 3), input_scale=None)
        m.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"))
        return m

    results = {}
    limit_timer = _EpochTimer().callback
    model().fit(x, y, batch_size=args.batch_size, epochs=args.repeats + 1, shuffle=True, verbose=0,
                callbacks=[limit_timer])
    results["limit (in-memory tensors, no augmentation)"] = n / statistics.median(limit_timer.times[1:])
    seq = ArraySequence(x, arrays.masks, args.batch_size, shuffle=True, workers=args.workers,
                        make_augmenter=partial(build_augmenter, RECIPE_AUGMENT, float_input=True))
    real_timer = _EpochTimer().callback
    model().fit(seq, epochs=args.repeats + 1, verbose=0, callbacks=[real_timer])
    results[f"real loop (ArraySequence, recipe augmentation, {args.workers} threads)"] = \
        n / statistics.median(real_timer.times[1:])
    aug = build_augmenter(RECIPE_AUGMENT, seed=0, float_input=True)
    t = time.perf_counter()
    for i in range(n):
        aug(x[i].copy(), arrays.masks[i].copy())
    results["augmentation alone (1 thread)"] = n / (time.perf_counter() - t)

    env = environment_info()
    print(f"machine: {env['cpu']} ({env['cpu_count']} cores), keras {env['keras']} backend "
          f"{keras.backend.backend()}, tensorflow {env['tensorflow']}")
    print(f"{n} real slices at {args.img_size} px, batch {args.batch_size}, ResUNet width 1, BCE + Dice, AdamW; "
          f"median of {args.repeats} epochs after 1 warm-up")
    for name, value in results.items():
        print(f"  {name:62s} {value:8.1f} slices/s")
    keys = list(results)
    print(f"  ratio real / limit: {results[keys[1]] / results[keys[0]]:.3f}")


if __name__ == "__main__":
    main()
