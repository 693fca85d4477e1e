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


#: PNG ``tEXt`` chunk (keyword ``Software``) that every PNG the pipeline writes carries (masks, overlays): the
#: folder walker never reads such a file as an input slice, wherever it was copied.
PIPELINE_PNG_TEXT = b"Software\x00classseg pipeline output"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = 8 + 25  # signature + the IHDR chunk (length, type, 13 bytes, CRC), always first


def tag_png(data: bytes) -> bytes:
    """``data`` (an encoded PNG) with the :data:`PIPELINE_PNG_TEXT` chunk right after its header."""
    import struct
    import zlib

    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunk = (struct.pack(">I", len(PIPELINE_PNG_TEXT)) + b"tEXt" + PIPELINE_PNG_TEXT
             + struct.pack(">I", zlib.crc32(b"tEXt" + PIPELINE_PNG_TEXT) & 0xFFFFFFFF))
    return data[:_IHDR_END] + chunk + data[_IHDR_END:]


def is_pipeline_png(path: str | Path) -> bool:
    """True for a PNG written by the pipeline (:func:`tag_png`); reads only the file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(_IHDR_END + 12 + len(PIPELINE_PNG_TEXT))
    except OSError:
        return False
    return head.startswith(_PNG_SIGNATURE) and head[_IHDR_END + 8:].startswith(PIPELINE_PNG_TEXT)


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


#: How pixel types become 0..255 (the same in training and inference: every reader calls :func:`read_image`).
#: One fixed rule per type, never the slice's own minimum and maximum, so one scan gives one input however
#: its slices are stored: 8-bit as is; 16-bit unsigned by full-range mapping (``round(v / 257)``: 0 -> 0,
#: 65535 -> 255); float only when every value lies in [0, 1] (x 255) or else in [0, 255] (as is), otherwise
#: refused; other types (signed integers, 32-bit integers) refused.
BIT_DEPTH_RULE = ("8-bit as is; 16-bit unsigned round(v / 257) (full range, 65535 -> 255); float within [0, 1] "
                  "x 255, else within [0, 255] as is; anything else refused")


def _to_uint8(image: np.ndarray, path: str | Path = "") -> np.ndarray:
    """Pixels as uint8 by :data:`BIT_DEPTH_RULE` (never the slice's own min-max)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:  # (v + 128) // 257 == round(v / 257) in integers
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise ImageReadError(path, "float image with NaN or infinite values; save it as 8 or 16 bit")
        lo, hi = float(image.min()), float(image.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.round(image.astype(np.float64) * 255.0).astype(np.uint8)
        if lo >= 0.0 and hi <= 255.0:
            return np.round(image.astype(np.float64)).astype(np.uint8)
        raise ImageReadError(path, f"float image with values {lo:.4g}..{hi:.4g}, outside [0, 1] and [0, 255]; "
                                   "classseg maps float slices from [0, 1] (x 255) or [0, 255] only (never by "
                                   "the slice's own range): save it as 8 or 16 bit")
    raise ImageReadError(path, f"unsupported pixel type {image.dtype} (expected 8-bit, 16-bit unsigned or float)")


def read_image(path: str | Path) -> np.ndarray:
    """Read a slice as uint8 RGB (H, W, 3).

    Grayscale is repeated to 3 channels, RGBA loses its alpha channel; 16-bit and float images are
    mapped by :data:`BIT_DEPTH_RULE` (16-bit: ``round(v / 257)``; float: [0, 1] x 255 or [0, 255],
    otherwise refused), never stretched by the slice's own range. Raises :class:`ImageReadError`
    naming the file otherwise. A NIfTI slice reference (:func:`classseg.data.nifti.slice_ref`) reads that slice.
    """
    if "@axial_" in str(path):
        from classseg.data.nifti import is_slice_ref, read_ref

        if is_slice_ref(path):
            return read_ref(path)
    image = _to_uint8(_read_raw(path), path)
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


#: The one ground-truth rule of every command (training, ``data``, the pipeline, ``classseg evaluate``).
MASK_RULE = ("0 = background and one other value = tumor (0/1, 0/255, 0/128, 0/65535, ...); a mask with two or "
             "more non-zero values (JPEG artefacts, label maps) is refused")


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask as uint8 (H, W) in {0, 1} by :data:`MASK_RULE`.

    0 is background and the one non-zero value, whatever it is (1, 255, 128, 65535), is tumor; a mask
    holding two or more different non-zero values (a JPEG-compressed mask, a label map) is refused, so
    every command reads the same masks the same way. Multi-channel masks must agree across channels.
    ``shape`` (H, W), when given, must match. Anything else raises :class:`ImageReadError`. A NIfTI ground-truth
    reference (:func:`classseg.data.nifti.slice_ref` with ``truth``) reads that slice of the truth volume.
    """
    if "@axial_" in str(path):
        from classseg.data.nifti import is_slice_ref, read_ref

        if is_slice_ref(path):
            return read_ref(path, shape)
    mask = _read_raw(path)
    if mask.ndim == 3:
        if mask.shape[2] == 4:
            mask = mask[:, :, :3]
        if not np.all(mask == mask[:, :, :1]):
            raise ImageReadError(path, "mask has channels that differ; expected a single-channel binary mask")
        mask = mask[:, :, 0]
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise ImageReadError(path, "mask has NaN or infinite values; expected 0 = background, one value = tumor")
    values = np.unique(mask)
    nonzero = values[values != 0]
    if nonzero.size > 1:
        shown = ", ".join(f"{v:g}" for v in values[:6].tolist()) + (", ..." if values.size > 6 else "")
        raise ImageReadError(path, f"mask is not binary (values {shown}): expected 0 = background and one other "
                                   "value = tumor (0/1, 0/255, ...); JPEG-compressed masks and label maps are "
                                   "refused: save it losslessly (PNG/TIFF) as 0/255")
    if shape is not None and mask.shape != tuple(shape):
        raise ImageReadError(path, f"mask shape {mask.shape} differs from the image's {tuple(shape)}")
    return (mask != 0).astype(np.uint8)
