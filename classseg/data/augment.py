"""Joint image/mask augmentation with albumentations (seeds 000 and 001, and the CPU recipe of issue 10).

Albumentations was chosen over Keras 3 augmentation layers because it applies one random
geometric transform to the image and its mask together, has elastic deformation, and was the
faster of the two on this data (see ``benchmarks/augment.py`` and docs/benchmarks.md).

The transforms cover what the LGG data really vary in: head position and size (flips, 90-degree
rotations, small rotations, scale and shift), anatomy (elastic deformation), scanner gain and
contrast (brightness / contrast / noise; on z-scored inputs these act in standard-deviation units)
and the dataset's missing-sequence cases: for 9 patients post-contrast, for 6 pre-contrast was
missing and replaced with FLAIR (dataset README). :class:`FlairForMissingSequence` mimics that.
Images may be uint8 0..255 or float32 (patient z-scores); masks are uint8 {0, 1}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Augmenter = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

#: Channel order of the LGG slices: pre-contrast, FLAIR, post-contrast.
FLAIR_CHANNEL = 1


@dataclass
class AugmentConfig:
    """Probabilities and strengths of each transform (defaults: moderate, as in seeds 000/001).

    ``rot90_p``, ``affine_p``, ``flair_for_missing_p`` are 0 here (the seeds' set); the CPU recipe
    (:data:`RECIPE_AUGMENT`) turns them on.
    """

    hflip: float = 0.5
    vflip: float = 0.0
    rot90_p: float = 0.0
    rotate_limit: float = 15.0
    rotate_p: float = 0.5
    affine_p: float = 0.0
    scale_limit: float = 0.15  # zoom in [1 - s, 1 + s]
    shift_limit: float = 0.06  # fraction of the side
    elastic_p: float = 0.2
    elastic_alpha: float = 30.0
    elastic_sigma: float = 6.0
    noise_p: float = 0.2
    noise_std: tuple[float, float] = (0.01, 0.04)
    brightness_contrast_p: float = 0.5
    brightness_limit: float = 0.15
    contrast_limit: float = 0.15
    flair_for_missing_p: float = 0.0  # replace pre- or post-contrast with FLAIR (dataset's missing sequences)
    # independent per-channel gain (log-uniform in [1/g, g]) and gamma (log-uniform in [1/y, y]): scanner and
    # export differences between patients (issue 17); 0 = off
    gain_gamma_p: float = 0.0
    gain_limit: float = 1.0
    gamma_limit: float = 1.0


#: The CPU recipe's augmentation (issue 10): every flip / 90-degree rotation of the dihedral group,
#: rotation + scale + shift, elastic, intensity, and the missing-sequence substitution.
RECIPE_AUGMENT = AugmentConfig(hflip=0.5, vflip=0.5, rot90_p=0.5, rotate_p=0.0, affine_p=0.6, scale_limit=0.15,
                               shift_limit=0.06, rotate_limit=20.0, elastic_p=0.15, elastic_alpha=30.0,
                               elastic_sigma=6.0, noise_p=0.15, noise_std=(0.01, 0.05), brightness_contrast_p=0.6,
                               brightness_limit=0.2, contrast_limit=0.2, flair_for_missing_p=0.15)

#: The robust recipe (issue 17): :data:`RECIPE_AUGMENT` plus independent per-channel gain in [0.5, 2] and
#: gamma in [0.67, 1.5] on half the slices, and the missing-sequence substitution on a quarter of them.
ROBUST_AUGMENT = AugmentConfig(**{**RECIPE_AUGMENT.__dict__, "gain_gamma_p": 0.5, "gain_limit": 2.0,
                                  "gamma_limit": 1.5, "flair_for_missing_p": 0.25})

#: ``augment_profile`` names of the training commands.
AUGMENT_PROFILES = {"recipe": RECIPE_AUGMENT, "robust": ROBUST_AUGMENT, "seeds": AugmentConfig()}


def augment_value_scale(normalization: str) -> float:
    """``value_scale`` of :func:`build_augmenter` for a model card's normalization: 1 for z-scores,
    255 for inputs on the 0..255 scale."""
    return 1.0 if normalization == "patient_zscore" else 255.0


def channel_gain_gamma(img: np.ndarray, gain: Sequence[float], gamma: Sequence[float]) -> np.ndarray:
    """Per channel c: ``lo + g_c * R * ((x - lo) / R) ** gamma_c`` with ``lo``, ``R`` the channel's
    minimum and range in this image, so the shape of the histogram changes (gamma) and its scale
    (gain) without assuming a value range: valid for 0..255 pixels and z-scores alike. Float images
    are not clipped; uint8 images are rounded and clipped to 0..255 (they cannot hold more)."""
    x = img.astype(np.float32)
    out = np.empty_like(x)
    for c in range(x.shape[-1]):
        ch = x[..., c]
        lo = float(ch.min())
        span = float(ch.max()) - lo
        g = float(gain[c % len(gain)])
        if span <= 1e-6:
            out[..., c] = ch * g
            continue
        out[..., c] = lo + g * span * np.power((ch - lo) / span, float(gamma[c % len(gamma)]))
    if img.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out


def _gain_gamma_class() -> type:
    import albumentations as A

    class ChannelGainGamma(A.ImageOnlyTransform):
        """Independent per-channel gain and gamma (:func:`channel_gain_gamma`). Hand-written:
        albumentations' RandomGamma / RandomBrightnessContrast act on all channels at once and clip
        float images to [0, 1]."""

        def __init__(self, gain_limit: float = 2.0, gamma_limit: float = 1.5, p: float = 0.5) -> None:
            super().__init__(p=p)
            self.gain_limit, self.gamma_limit = gain_limit, gamma_limit

        def get_params(self) -> dict[str, Any]:
            r = self.py_random
            lg, ly = np.log(max(self.gain_limit, 1.0)), np.log(max(self.gamma_limit, 1.0))
            return {"gain": [float(np.exp(r.uniform(-lg, lg))) for _ in range(3)],
                    "gamma": [float(np.exp(r.uniform(-ly, ly))) for _ in range(3)]}

        def apply(self, img: np.ndarray, gain: list[float] = (1.0,), gamma: list[float] = (1.0,),
                  **params: Any) -> np.ndarray:
            return channel_gain_gamma(img, gain, gamma)

    return ChannelGainGamma


def _flair_transform_class() -> type:
    import albumentations as A

    class FlairForMissingSequence(A.ImageOnlyTransform):
        """Replace the pre-contrast (0), the post-contrast (2) or both channels with FLAIR (1), as the LGG
        export did for patients missing those sequences. Hand-written: albumentations' ChannelDropout fills a constant,
        it does not copy another channel. Image-only, so the mask is untouched and stays aligned."""

        def get_params(self) -> dict[str, Any]:
            # pre missing, post missing, or both (all three channels FLAIR, as for some LGG patients)
            return {"channels": ((0,), (2,), (0, 2))[self.py_random.randrange(3)]}

        def apply(self, img: np.ndarray, channels: tuple[int, ...] = (0,), **params: Any) -> np.ndarray:
            # 3 channels, or 3 per neighbour with slice context (classseg.data.context): every neighbour
            # loses the same sequence, as a patient missing it does
            if img.ndim != 3 or img.shape[-1] % 3:
                return img
            out = img.copy()
            for base in range(0, img.shape[-1], 3):
                for channel in channels:
                    out[..., base + channel] = img[..., base + FLAIR_CHANNEL]
            return out

    return FlairForMissingSequence


def _zscore_intensity_class() -> type:
    import albumentations as A

    class ZScoreIntensity(A.ImageOnlyTransform):
        """Per-channel gain and offset, then Gaussian noise, on z-scored (float) images, in SD units.

        Hand-written: albumentations' RandomBrightnessContrast and GaussNoise clip float images to
        [0, 1] (the range they assume for floats), which would cut z-scores off at 0 and 1."""

        def __init__(self, gain: float = 0.2, offset: float = 0.2, noise_p: float = 0.15,
                     noise_std: tuple[float, float] = (0.01, 0.05), p: float = 0.5) -> None:
            super().__init__(p=p)
            self.gain, self.offset, self.noise_p, self.noise_std = gain, offset, noise_p, noise_std

        def get_params(self) -> dict[str, Any]:
            r = self.py_random
            return {"gain": [1.0 + r.uniform(-self.gain, self.gain) for _ in range(3)],
                    "offset": [r.uniform(-self.offset, self.offset) for _ in range(3)],
                    "noise": r.uniform(*self.noise_std) if r.random() < self.noise_p else 0.0,
                    "noise_seed": r.randrange(2**31)}

        def apply(self, img: np.ndarray, gain: list[float] = (1.0,), offset: list[float] = (0.0,),
                  noise: float = 0.0, noise_seed: int = 0, **params: Any) -> np.ndarray:
            per_channel = np.arange(img.shape[-1]) % 3  # sequence of each channel (3 per neighbour with context)
            out = img.astype(np.float32) * np.asarray(gain, np.float32)[per_channel] \
                + np.asarray(offset, np.float32)[per_channel]
            if noise > 0:
                out += np.random.default_rng(noise_seed).normal(0.0, noise, out.shape).astype(np.float32)
            return out

    return ZScoreIntensity


def build_augmenter(config: AugmentConfig | None = None, seed: int = 0, float_input: bool = False,
                    value_scale: float = 1.0) -> Augmenter:
    """A seeded callable ``(image HxWx3, mask uint8 HxW[x1]) -> (image, mask)``.

    ``float_input``: images are float z-scores (:mod:`classseg.data.standardize`); intensity changes
    are then applied in SD units by :class:`ZScoreIntensity` instead of albumentations' 0..1 transforms.
    uint8 images use albumentations' brightness / contrast and noise. Feeding float images to an
    augmenter built for uint8 is refused (those transforms would clip them to [0, 1]).
    ``value_scale``: the unit of float inputs' offsets and noise: 1 for z-scores, 255 for
    percentile-scaled pixels (``patient_percentile``). Per-channel gain and gamma
    (``config.gain_gamma_p``) work on any input.
    """
    import albumentations as A
    import cv2

    config = config or AugmentConfig()
    flair = _flair_transform_class()
    if float_input:
        intensity = [_zscore_intensity_class()(gain=config.contrast_limit, offset=config.brightness_limit * value_scale,
                                               noise_p=config.noise_p / max(config.brightness_contrast_p, 1e-6),
                                               noise_std=(config.noise_std[0] * value_scale,
                                                          config.noise_std[1] * value_scale),
                                               p=max(config.brightness_contrast_p, config.noise_p))]
    else:
        intensity = [A.GaussNoise(std_range=config.noise_std, p=config.noise_p),
                     A.RandomBrightnessContrast(brightness_limit=config.brightness_limit,
                                                contrast_limit=config.contrast_limit, p=config.brightness_contrast_p)]
    transform = A.Compose([
        A.HorizontalFlip(p=config.hflip),
        A.VerticalFlip(p=config.vflip),
        A.RandomRotate90(p=config.rot90_p),
        # Reflected borders: the slice edges are background, and a constant 0 would be "mean brain" in
        # z-scored inputs.
        A.Rotate(limit=config.rotate_limit, border_mode=cv2.BORDER_REFLECT_101, p=config.rotate_p),
        A.Affine(scale=(1 - config.scale_limit, 1 + config.scale_limit),
                 translate_percent=(-config.shift_limit, config.shift_limit),
                 rotate=(-config.rotate_limit, config.rotate_limit), border_mode=cv2.BORDER_REFLECT_101,
                 p=config.affine_p),
        A.ElasticTransform(alpha=config.elastic_alpha, sigma=config.elastic_sigma, p=config.elastic_p),
        *intensity,
        *([_gain_gamma_class()(gain_limit=config.gain_limit, gamma_limit=config.gamma_limit,
                               p=config.gain_gamma_p)] if config.gain_gamma_p > 0 else []),
        flair(p=config.flair_for_missing_p),
    ], seed=seed)

    def augment(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not float_input and image.dtype != np.uint8:
            raise TypeError(f"augmenter built for uint8 pixels got {image.dtype} images; build it with "
                            "float_input=True for normalised inputs (albumentations would clip them to [0, 1])")
        squeeze = mask.ndim == 3
        out = transform(image=image, mask=mask[..., 0] if squeeze else mask)
        new_mask = out["mask"][..., None] if squeeze else out["mask"]
        return out["image"], new_mask

    return augment
