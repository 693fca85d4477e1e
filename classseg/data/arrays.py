"""Load a slice table into in-memory uint8 arrays at a fixed size (the LGG set fits in RAM)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from classseg.data.io import read_image, read_mask


@dataclass
class SliceArrays:
    """Images (N, S, S, 3) uint8, masks (N, S, S, 1) uint8 {0,1}, labels (N,) int, and the rows.

    ``labels[i]`` is 1 when slice i's ground truth *at its original size* is non-empty (design.md
    "Labels"), not when the resized mask is: a tumor of a few pixels can vanish when the mask is shrunk
    to the model's size, and it still counts as a tumor slice (issue 18). ``masks`` are the resized ones
    (the training targets)."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> SliceArrays:
        """The slices at ``index`` (boolean mask or positions)."""
        return SliceArrays(self.images[index], self.masks[index], self.labels[index],
                           self.frame.iloc[np.flatnonzero(index) if np.asarray(index).dtype == bool else index]
                           .reset_index(drop=True))


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an image to size x size (area interpolation when shrinking, linear otherwise)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a {0,1} mask with nearest-neighbour interpolation."""
    if mask.shape[0] == size and mask.shape[1] == size:
        return mask
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)


def _load_one(row: tuple[str, str | None], size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(image, mask) resized to ``size`` and the label of the original-size mask (1 = any tumor pixel)."""
    image_path, mask_path = row
    image = read_image(image_path)
    if mask_path:
        mask = read_mask(mask_path, shape=image.shape[:2])
    else:
        mask = np.zeros(image.shape[:2], dtype=np.uint8)
    return resize_image(image, size), resize_mask(mask, size), int(mask.any())


def load_arrays(df: pd.DataFrame, img_size: int = 256, progress: bool = True, workers: int = 8) -> SliceArrays:
    """Decode and resize every slice of ``df`` (rows from :func:`discover`); labels from the original-size
    masks (the same as discovery's ``tumor`` column), so every original tumor slice counts."""
    n = len(df)
    images = np.zeros((n, img_size, img_size, 3), dtype=np.uint8)
    masks = np.zeros((n, img_size, img_size, 1), dtype=np.uint8)
    labels = np.zeros(n, dtype=np.int64)
    rows = list(zip(df["image_path"], df["mask_path"]))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # OpenCV decoding releases the GIL
        results = pool.map(lambda r: _load_one(r, img_size), rows)
        for i, (image, mask, label) in enumerate(tqdm(results, total=n, desc=f"loading slices @{img_size}px",
                                                     disable=not progress, unit="slice")):
            images[i] = image
            masks[i, :, :, 0] = mask
            labels[i] = label
    return SliceArrays(images, masks, labels, df.reset_index(drop=True))
