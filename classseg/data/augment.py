"""Joint image/mask augmentation with albumentations (seeds 000 and 001).

Albumentations was chosen over Keras 3 augmentation layers because it applies one random
geometric transform to the image and its mask together, has elastic deformation, and was the
faster of the two on this data (see ``benchmarks/augment.py`` and docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Augmenter = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class AugmentConfig:
    """Probabilities and strengths of each transform (defaults: moderate, as in seeds 000/001)."""

    hflip: float = 0.5
    vflip: float = 0.0
    rotate_limit: float = 15.0
    rotate_p: float = 0.5
    elastic_p: float = 0.2
    elastic_alpha: float = 30.0
    elastic_sigma: float = 6.0
    noise_p: float = 0.2
    noise_std: tuple[float, float] = (0.01, 0.04)
    brightness_contrast_p: float = 0.5
    brightness_limit: float = 0.15
    contrast_limit: float = 0.15


def build_augmenter(config: AugmentConfig | None = None, seed: int = 0) -> Augmenter:
    """A seeded callable ``(image uint8 HxWx3, mask uint8 HxW[x1]) -> (image, mask)``."""
    import albumentations as A
    import cv2

    config = config or AugmentConfig()
    transform = A.Compose([
        A.HorizontalFlip(p=config.hflip),
        A.VerticalFlip(p=config.vflip),
        A.Rotate(limit=config.rotate_limit, border_mode=cv2.BORDER_CONSTANT, p=config.rotate_p),
        A.ElasticTransform(alpha=config.elastic_alpha, sigma=config.elastic_sigma, p=config.elastic_p),
        A.GaussNoise(std_range=config.noise_std, p=config.noise_p),
        A.RandomBrightnessContrast(brightness_limit=config.brightness_limit,
                                   contrast_limit=config.contrast_limit, p=config.brightness_contrast_p),
    ], seed=seed)

    def augment(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        squeeze = mask.ndim == 3
        out = transform(image=image, mask=mask[..., 0] if squeeze else mask)
        new_mask = out["mask"][..., None] if squeeze else out["mask"]
        return out["image"], new_mask

    return augment
