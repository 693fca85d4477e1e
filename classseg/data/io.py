"""Reading MRI slices and masks into uint8 arrays, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".webp")
MASK_SUFFIX = "_mask"


class ImageReadError(ValueError):
    """An image or mask that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of the supported image extensions."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_mask_file(path: str | Path) -> bool:
    """True for ``<stem>_mask.<ext>`` ground-truth files."""
    p = Path(path)
    return is_image_file(p) and p.stem.endswith(MASK_SUFFIX)


def mask_path_for(image_path: str | Path) -> Path | None:
    """The ``<stem>_mask.<ext>`` beside an image (same extension first), or None."""
    p = Path(image_path)
    candidates = [p.with_name(p.stem + MASK_SUFFIX + p.suffix)]
    candidates += [p.with_name(p.stem + MASK_SUFFIX + ext) for ext in IMAGE_EXTENSIONS]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


def _read_raw(path: str | Path) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "file does not exist")
    if not p.is_file():
        raise ImageReadError(p, "not a regular file")
    if not is_image_file(p):
        raise ImageReadError(p, f"not an image (extension {p.suffix or 'none'!r}; expected one of "
                             f"{', '.join(IMAGE_EXTENSIONS)})")
    if p.stat().st_size == 0:
        raise ImageReadError(p, "file is empty (0 bytes)")
    # np.fromfile + imdecode also copes with non-ASCII paths, which cv2.imread does not.
    data = np.fromfile(str(p), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageReadError(p, "corrupt or unreadable image (OpenCV could not decode it)")
    return image


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale 16-bit / float images to 0..255 by their own range (min-max)."""
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float64)
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.round((image - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read a slice as uint8 RGB (H, W, 3).

    Grayscale is repeated to 3 channels, RGBA loses its alpha channel, 16-bit and float images
    are min-max scaled to 0..255. Raises :class:`ImageReadError` naming the file otherwise.
    """
    image = _to_uint8(_read_raw(path))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3:
        raise ImageReadError(path, f"unsupported image shape {image.shape}")
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageReadError(path, f"unsupported number of channels: {channels}")


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask as uint8 (H, W) in {0, 1}.

    Masks stored as 0/255 and as 0/1 are both accepted; multi-channel masks must agree across
    channels. ``shape`` (H, W), when given, must match. Anything else raises ImageReadError.
    """
    mask = _read_raw(path)
    if mask.ndim == 3:
        if mask.shape[2] == 4:
            mask = mask[:, :, :3]
        if not np.all(mask == mask[:, :, :1]):
            raise ImageReadError(path, "mask has channels that differ; expected a single-channel binary mask")
        mask = mask[:, :, 0]
    values = np.unique(mask)
    if values.size > 2 or not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}
                               or set(values.tolist()) <= {0, 65535}):
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise ImageReadError(path, f"mask is not binary (values {shown}); expected 0/1 or 0/255")
    if shape is not None and mask.shape != tuple(shape):
        raise ImageReadError(path, f"mask shape {mask.shape} differs from the image's {tuple(shape)}")
    return (mask > 0).astype(np.uint8)
