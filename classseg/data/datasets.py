"""tf.data input pipelines over in-memory arrays: cast, optional augmentation, batch, prefetch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from classseg.data.augment import Augmenter


def _augment_op(augment: Augmenter):
    def apply(image: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def run(img: np.ndarray, msk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out_img, out_msk = augment(img, msk)
            return out_img.astype(np.uint8), out_msk.astype(np.uint8)

        new_image, new_mask = tf.numpy_function(run, [image, mask], [tf.uint8, tf.uint8])
        new_image.set_shape(image.shape)
        new_mask.set_shape(mask.shape)
        return new_image, new_mask

    return apply


def _base(images: np.ndarray, masks: np.ndarray, batch_size: int, shuffle: bool,
          augment: Augmenter | None, seed: int) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        ds = ds.map(_augment_op(augment), num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def segmentation_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int = 16, shuffle: bool = False,
                         augment: Augmenter | None = None, seed: int = 0) -> tf.data.Dataset:
    """(image float32 0..255, mask float32 {0,1}) batches; augmentation transforms both together."""
    if masks.ndim == 3:
        masks = masks[..., None]
    ds = _base(images, masks, batch_size, shuffle, augment, seed)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.float32)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def classification_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int = 32, shuffle: bool = False,
                           augment: Augmenter | None = None, seed: int = 0, num_classes: int = 2,
                           masks: np.ndarray | None = None) -> tf.data.Dataset:
    """(image float32 0..255, one-hot float32 label) batches; masks only feed the augmenter."""
    if masks is None:
        masks = np.zeros(images.shape[:3] + (1,), dtype=np.uint8)
    labels_ds = tf.data.Dataset.from_tensor_slices(np.asarray(labels, dtype=np.int64))
    base = _base(images, masks, batch_size, False, augment, seed)
    ds = tf.data.Dataset.zip((base, labels_ds))
    if shuffle:
        # shuffle before augmentation would be cheaper, but zipping keeps labels aligned simply.
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda xm, y: (tf.cast(xm[0], tf.float32), tf.one_hot(y, num_classes)),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
