"""Augmentation throughput: albumentations (in tf.data via numpy_function) vs Keras 3 layers.

Both apply the same transforms to image and mask together: horizontal flip, rotation (+-15 deg),
elastic deformation, gaussian noise and brightness/contrast. The Keras path stacks the mask as a
4th channel through the geometric layers (so one random draw moves both) and applies the
intensity layers to the image only. Prints machine info and slices/s, median of repeats.

    python benchmarks/augment.py --data ../shared/data/kaggle_3m --slices 256 --size 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from classseg.data import AugmentConfig, build_augmenter, discover, load_arrays, segmentation_dataset  # noqa: E402
from classseg.utils.environment import environment_info  # noqa: E402


def keras_pipeline(images: np.ndarray, masks: np.ndarray, batch: int, seed: int) -> tf.data.Dataset:
    cfg = AugmentConfig()
    geometric = keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(cfg.rotate_limit / 360.0, fill_mode="constant", seed=seed),
        keras.layers.RandomElasticTransform(factor=0.2, scale=0.1, seed=seed),
    ])
    intensity = keras.Sequential([
        keras.layers.GaussianNoise(0.03, seed=seed),
        keras.layers.RandomBrightness(cfg.brightness_limit, value_range=(0, 1), seed=seed),
        keras.layers.RandomContrast(cfg.contrast_limit, value_range=(0, 1), seed=seed),
    ])

    def aug(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        stacked = tf.concat([tf.cast(x, tf.float32), tf.cast(y, tf.float32) * 255.0], axis=-1)
        stacked = geometric(stacked, training=True)
        image = intensity(stacked[..., :3] / 255.0, training=True) * 255.0
        return image, tf.cast(stacked[..., 3:] > 127.5, tf.float32)

    ds = tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch)
    return ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def time_epochs(make, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = 0
        for x, _ in make():
            n += int(x.shape[0])
        times.append(n / (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/kaggle_3m")
    parser.add_argument("--slices", type=int, default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    info = environment_info()
    print(f"machine: {info['cpu']} x{info['cpu_count']}, tensorflow {info['tensorflow']}, keras {info['keras']}")
    df = discover(args.data)
    df = df[df["tumor"]].head(args.slices)
    arr = load_arrays(df, img_size=args.size, progress=False)
    print(f"data: {len(arr)} real tumor slices from {args.data} at {args.size}px, batch {args.batch}")
    albu = build_augmenter(AugmentConfig(elastic_p=1.0, noise_p=1.0, brightness_contrast_p=1.0, rotate_p=1.0), 0)
    results = {
        "albumentations (tf.data numpy_function, parallel map)":
            time_epochs(lambda: segmentation_dataset(arr.images, arr.masks, args.batch, augment=albu), args.repeats),
        "keras 3 layers (batched, in tf.data map)":
            time_epochs(lambda: keras_pipeline(arr.images, arr.masks, args.batch, 0), args.repeats),
    }
    base = None
    for name, rates in results.items():
        med = statistics.median(rates)
        base = base or med
        print(f"{name:55s} median {med:8.1f} slices/s  (runs: {', '.join(f'{r:.1f}' for r in rates)})")
    names = list(results)
    ratio = statistics.median(results[names[0]]) / statistics.median(results[names[1]])
    print(f"ratio albumentations / keras: {ratio:.2f}x (every transform applied with p=1)")


if __name__ == "__main__":
    main()
