"""A backend-agnostic Keras input pipeline over in-memory arrays: shuffle, augment, batch.

``keras.utils.PyDataset`` instead of ``tf.data`` so that the same training code runs on every Keras
backend (TensorFlow on a CPU here, JAX on a lent GPU machine that has no TensorFlow). Batches are
augmented by a thread pool (OpenCV, which albumentations uses, releases the GIL); each worker thread
has its own seeded augmenter, because an albumentations pipeline is not thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import keras
import numpy as np

from classseg.data.augment import Augmenter


class ArraySequence(keras.utils.PyDataset):
    """Batches of ``(image float32, target)`` from arrays held in memory.

    - ``images``: (N, H, W, 3) float32 model inputs (already normalised) or uint8 pixels.
    - ``masks``: (N, H, W[, 1]) uint8 {0, 1}.
    - ``target``: ``"mask"`` -> float32 (B, H, W, 1) masks; ``"label"`` -> one-hot (B, 2), tumor =
      the *augmented* mask is non-empty; ``"both"`` -> ``{"class": ..., "mask": ...}``.
    - ``make_augmenter(seed)``: a factory (e.g. ``partial(build_augmenter, config)``), called once per
      worker thread; None = no augmentation.
    Shuffled each epoch when ``shuffle``; the last batch may be smaller.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, batch_size: int = 32, shuffle: bool = False,
                 make_augmenter: Callable[[int], Augmenter] | None = None, seed: int = 0, target: str = "mask",
                 workers: int = 1, max_queue_size: int = 8) -> None:
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        if target not in ("mask", "label", "both"):
            raise ValueError(f"target must be 'mask', 'label' or 'both', got {target!r}")
        self.images = images
        self.masks = masks if masks.ndim == 4 else masks[..., None]
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.make_augmenter = make_augmenter
        self.seed = seed
        self.target = target
        self._epoch = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._threads = 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.images))
        return np.random.default_rng(self.seed + 7919 * self._epoch).permutation(len(self.images))

    def __len__(self) -> int:
        return int(np.ceil(len(self.images) / self.batch_size))

    def _augmenter(self) -> Augmenter | None:
        if self.make_augmenter is None:
            return None
        aug = getattr(self._local, "augment", None)
        if aug is None:
            with self._lock:
                self._threads += 1
                index = self._threads
            aug = self._local.augment = self.make_augmenter(self.seed + 104729 * index)
        return aug

    def __getitem__(self, index: int):
        idx = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        x = self.images[idx]  # fancy indexing copies: augmenting in place leaves the source intact
        m = self.masks[idx]
        augment = self._augmenter()
        if augment is not None:
            for i in range(len(idx)):  # uint8 pixels are augmented as uint8, z-scores as float32
                x[i], m[i] = augment(x[i], m[i])
        x = x.astype(np.float32, copy=False)
        y_mask = m.astype(np.float32)
        if self.target == "mask":
            return x, y_mask
        labels = (m.reshape(len(m), -1).max(axis=1) > 0).astype(np.int64)
        one_hot = np.eye(2, dtype=np.float32)[labels]
        if self.target == "label":
            return x, one_hot
        return x, {"class": one_hot, "mask": y_mask}

    def on_epoch_end(self) -> None:
        self._epoch += 1
        self._order = self._permutation()
