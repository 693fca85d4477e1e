"""NIfTI volumes (``.nii`` / ``.nii.gz``, nibabel) as cases of axial slices, and masks written back as volumes.

Naming rule (:data:`NAMING_RULE`), in any folder under the walked one:

* one 3D volume per sequence, ``<case>_<sequence>.nii[.gz]`` (``_`` or ``-`` before the sequence, any case):
  pre-contrast ``t1`` / ``t1n`` / ``t1w`` / ``t1pre``, FLAIR ``flair`` / ``t2f``, post-contrast ``t1ce`` /
  ``t1c`` / ``t1gd`` / ``t1post``; they fill the three input channels in the order of the LGG slices the
  models were trained on (:data:`CHANNELS`: pre-contrast, FLAIR, post-contrast). FLAIR is required; a
  missing pre- or post-contrast volume is replaced by FLAIR, as the LGG export did and as the training
  augmentation does (``classseg.data.augment.FlairForMissingSequence``), and the case says so in its note;
* or one 4D volume ``<case>.nii[.gz]`` whose fourth axis holds the three channels in that order;
* ground truth ``<case>_mask.nii[.gz]`` or ``<case>_seg.nii[.gz]``, read by the one mask rule of every command
  (:data:`classseg.data.io.MASK_RULE`: 0 = background, one other value = tumor, a label map is refused);
* other sequences (``t2``, ``t2w``, ``dwi``, ...) are not used by the models and are listed as skipped.

A case is a patient, named by its folder's path relative to the walked folder and the case name
(``site_a/case001``). Its slices are taken along the axial voxel axis, the one the affine's orientation
(``nibabel.aff2axcodes``) sends closest to superior-inferior, in the order they are stored (slice ``k`` is voxel
index ``k`` on that axis, written ``<case>/z<k>``). The two other axes become the slice's rows and columns by
a permutation and flips only (no resampling): rows run anterior to posterior, columns from the patient's right
to left, the radiological display of the LGG slices. :func:`from_display` undoes it, so a predicted mask
volume lines up with the input voxel for voxel and keeps its affine and header.

Intensities (:data:`INTENSITY_RULE`): integer volumes whose values lie in 0..255 are taken as they are (so an
8-bit volume made from 8-bit slices gives the very same slices); any other volume is mapped linearly per
sequence, 0 -> 0 and the 99.9th percentile of its positive voxels -> 255, clipped. That is one gain per
sequence volume, which the models' per-patient percentile normalisation removes again.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classseg.data.io import ImageReadError

__all__ = ["CHANNELS", "INTENSITY_RULE", "NAMING_RULE", "CaseVolume", "Layout", "VolumeCase", "VolumeTruth",
           "case_slice", "find_cases", "from_display", "is_nifti", "layout_of", "load_case", "load_truth",
           "parse_slice_name", "reference_image", "slice_name", "to_display", "truth_slice", "write_mask_volume"]

#: Input channel order: the LGG slices' (pre-contrast, FLAIR, post-contrast).
CHANNELS = ("pre", "flair", "post")

#: File-name sequence suffixes (lower case) per channel.
SEQUENCE_NAMES = {"pre": ("t1", "t1n", "t1w", "t1pre"), "flair": ("flair", "t2f"),
                  "post": ("t1ce", "t1c", "t1gd", "t1post")}
TRUTH_NAMES = ("mask", "seg")
UNUSED_NAMES = ("t2", "t2w", "pd", "dwi", "adc", "swi", "bold")

NAMING_RULE = ("<case>_<sequence>.nii[.gz] with sequence t1/t1n/t1w/t1pre (pre-contrast), flair/t2f (FLAIR, "
               "required), t1ce/t1c/t1gd/t1post (post-contrast), or one 4D <case>.nii[.gz] with the three channels "
               "(pre-contrast, FLAIR, post-contrast) on its 4th axis; ground truth <case>_mask or <case>_seg; "
               "a missing pre- or post-contrast volume is replaced by FLAIR")
INTENSITY_RULE = ("integer volumes within 0..255 as they are; any other volume per sequence linearly, 0 -> 0 and "
                  "the 99.9th percentile of its positive voxels -> 255, clipped")

_NIFTI = re.compile(r"^(?P<stem>.+?)\.nii(?:\.gz)?$", re.IGNORECASE)
_SUFFIX = re.compile(r"^(?P<case>.+)[_-](?P<seq>[A-Za-z0-9]+)$")


def is_nifti(path: str | Path) -> bool:
    """True for ``.nii`` / ``.nii.gz`` file names (any case)."""
    return _NIFTI.match(Path(path).name) is not None


def _split_name(name: str) -> tuple[str, str]:
    """(case, role) of a NIfTI file name: role is a channel, ``truth``, ``unused:<seq>`` or ``stack`` (4D)."""
    stem = _NIFTI.match(name).group("stem")
    m = _SUFFIX.match(stem)
    if m:
        seq = m.group("seq").lower()
        for channel, names in SEQUENCE_NAMES.items():
            if seq in names:
                return m.group("case"), channel
        if seq in TRUTH_NAMES:
            return m.group("case"), "truth"
        if seq in UNUSED_NAMES:
            return m.group("case"), f"unused:{seq}"
    return stem, "stack"


@dataclass(frozen=True)
class Layout:
    """How a volume's voxel axes become (slice, row, column): ``order`` = the stored axes of (axial, rows, columns),
    ``flip`` = whether rows / columns run against their stored direction; ``codes`` = ``aff2axcodes``."""

    order: tuple[int, int, int]
    flip: tuple[bool, bool]
    codes: tuple[str, str, str]

    @property
    def axial_axis(self) -> int:
        """The stored voxel axis the slices are taken along."""
        return self.order[0]


def layout_of(affine: np.ndarray, path: str | Path = "") -> Layout:
    """The :class:`Layout` of a volume from its affine (raises :class:`ImageReadError` for a degenerate one)."""
    import nibabel as nib

    codes = tuple(nib.aff2axcodes(affine))
    if None in codes or len(set(codes)) != 3:
        raise ImageReadError(path, f"orientation cannot be read from the affine (axis codes {codes})")
    axial = next(i for i, c in enumerate(codes) if c in "SI")
    rows = next(i for i, c in enumerate(codes) if c in "AP")
    cols = next(i for i, c in enumerate(codes) if c in "LR")
    return Layout((axial, rows, cols), (codes[rows] == "A", codes[cols] == "R"), codes)


def to_display(volume: np.ndarray, layout: Layout) -> np.ndarray:
    """Stored (X, Y, Z[, C]) -> slices (Z, H, W[, C]) in display orientation (contiguous)."""
    extra = tuple(range(3, volume.ndim))
    out = np.transpose(volume, layout.order + extra)
    if layout.flip[0]:
        out = out[:, ::-1]
    if layout.flip[1]:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def from_display(slices: np.ndarray, layout: Layout) -> np.ndarray:
    """Inverse of :func:`to_display`: slices (Z, H, W) -> the stored voxel layout."""
    out = slices
    if layout.flip[1]:
        out = out[:, :, ::-1]
    if layout.flip[0]:
        out = out[:, ::-1]
    return np.ascontiguousarray(np.transpose(out, np.argsort(layout.order)))


def slice_name(case_id: str, index: int) -> Path:
    """The relative name of slice ``index`` of a case: ``<case>/z<index>`` (three digits at least)."""
    return Path(case_id) / f"z{index:03d}"


@dataclass(frozen=True)
class VolumeCase:
    """One case found by :func:`find_cases`: its files per channel (or ``stack``), ground truth, and what the
    headers said. ``problem`` is why the case cannot be used (``""`` when it can); ``notes`` the substitutions."""

    case_id: str
    files: dict[str, Path]
    truth: Path | None
    relative: Path  # the first input file, relative to the walked folder (names the case in error rows)
    shape: tuple[int, int, int] | None = None
    layout: Layout | None = None
    problem: str = ""
    notes: tuple[str, ...] = ()

    @property
    def n_slices(self) -> int:
        """Slices along the axial axis (0 for a case that cannot be used)."""
        return 0 if self.problem or self.shape is None else self.shape[self.layout.axial_axis]

    @property
    def first_file(self) -> Path:
        """The file an error about the case names."""
        return next(iter(self.files.values()))

    def describe(self) -> dict[str, Any]:
        """Row of ``volumes.csv`` (without the pipeline's status)."""
        return {"case": self.case_id, "files": "; ".join(f"{k}={v.name}" for k, v in self.files.items()),
                "truth": self.truth.name if self.truth else "", "shape": "x".join(map(str, self.shape or ())),
                "orientation": "".join(self.layout.codes) if self.layout else "",
                "axial_axis": self.layout.axial_axis if self.layout else "", "slices": self.n_slices,
                "note": "; ".join(self.notes)}


def _header(path: Path) -> Any:
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises several types for a bad header
        raise ImageReadError(path, f"not a readable NIfTI volume ({type(err).__name__}: {err})") from None


def _check_case(case_id: str, files: dict[str, Path], truth: Path | None, relative: Path) -> VolumeCase:
    """A :class:`VolumeCase` with its shape and layout from the headers, or its ``problem``."""
    case = VolumeCase(case_id, files, truth, relative)
    notes = []
    try:
        if "stack" in files:
            if len(files) > 1:
                others = ", ".join(sorted(p.name for k, p in files.items() if k != "stack"))
                return _problem(case, f"both a 4D volume {files['stack'].name} and sequence volumes ({others}); "
                                      "keep one layout per case")
            img = _header(files["stack"])
            if len(img.shape) != 4 or img.shape[3] != len(CHANNELS):
                return _problem(case, f"{files['stack'].name}: shape {tuple(img.shape)}; a volume without a sequence "
                                      f"suffix must be 4D with {len(CHANNELS)} channels (pre-contrast, FLAIR, "
                                      "post-contrast) on its 4th axis, or name it <case>_flair.nii.gz "
                                      f"({NAMING_RULE})")
            shape, affine = tuple(img.shape[:3]), img.affine
        else:
            if "flair" not in files:
                have = ", ".join(f"{p.name}" for p in files.values())
                return _problem(case, f"no FLAIR volume (<case>_flair.nii.gz) beside {have}; FLAIR stands in for a "
                                      "missing pre- or post-contrast sequence but cannot itself be replaced")
            shapes, affines = {}, {}
            for channel, path in files.items():
                img = _header(path)
                dims = tuple(img.shape)
                if len(dims) == 4 and dims[3] == 1:
                    dims = dims[:3]
                if len(dims) != 3:
                    return _problem(case, f"{path.name}: shape {tuple(img.shape)}; a sequence volume must be 3D")
                shapes[channel], affines[channel] = dims, img.affine
            if len(set(shapes.values())) > 1:
                shown = ", ".join(f"{files[c].name} {'x'.join(map(str, s))}" for c, s in shapes.items())
                return _problem(case, f"sequences of different shapes ({shown}); resample them onto one grid")
            ref = affines["flair"]
            off = [files[c].name for c, a in affines.items() if not np.allclose(a, ref, atol=1e-3)]
            if off:
                return _problem(case, f"{', '.join(off)}: affine differs from {files['flair'].name}'s; the sequences "
                                      "must share one voxel grid")
            shape, affine = shapes["flair"], ref
            notes = [f"{name} missing: FLAIR used in its place" for name, label in
                     (("pre-contrast", "pre"), ("post-contrast", "post")) if label not in files]
        layout = layout_of(affine, case.first_file)
    except ImageReadError as err:
        return _problem(case, err.problem if err.path == str(case.first_file) else str(err))
    return VolumeCase(case_id, files, truth, relative, shape, layout, "", tuple(notes))


def _problem(case: VolumeCase, problem: str) -> VolumeCase:
    return VolumeCase(case.case_id, case.files, case.truth, case.relative, problem=problem)


def find_cases(root: str | Path) -> tuple[list[VolumeCase], list[dict[str, str]]]:
    """NIfTI cases under ``root`` by :data:`NAMING_RULE` (headers read, no voxel data) and the NIfTI files
    skipped (``{"path", "reason"}``). Cases that cannot be used are returned with their ``problem``."""
    from classseg.data.walk import natural_key, walk_following_links

    root = Path(root)
    groups: dict[tuple[str, str], dict[str, list[Path]]] = {}
    skipped: list[dict[str, str]] = []
    for dirpath, _, filenames in walk_following_links(root, skip_hidden=True):
        for name in filenames:
            if name.startswith(".") or not is_nifti(name):
                continue
            path = Path(dirpath) / name
            case, role = _split_name(name)
            if role.startswith("unused:"):
                skipped.append({"path": path.relative_to(root).as_posix(),
                                "reason": f"sequence {role[7:]!r} is not used by the models ({NAMING_RULE})"})
                continue
            folder = path.parent.relative_to(root).as_posix()
            groups.setdefault((folder, case), {}).setdefault(role, []).append(path)
    cases = []
    for (folder, case), roles in groups.items():
        case_id = case if folder == "." else f"{folder}/{case}"
        truths = roles.pop("truth", [])
        truth = sorted(truths)[0] if truths else None
        if not roles:
            skipped.append({"path": truth.relative_to(root).as_posix(), "reason": "ground-truth volume without its "
                            f"case's volumes ({NAMING_RULE})"})
            continue
        twice = {role: paths for role, paths in roles.items() if len(paths) > 1}
        files = {role: sorted(paths)[0] for role, paths in sorted(roles.items(), key=lambda r: _role_rank(r[0]))}
        relative = next(iter(files.values())).relative_to(root)
        if len(truths) > 1:
            cases.append(_problem(VolumeCase(case_id, files, None, relative),
                                  f"two ground-truth volumes ({', '.join(p.name for p in sorted(truths))}); keep one"))
        elif twice:
            shown = ", ".join(p.name for paths in twice.values() for p in sorted(paths))
            cases.append(_problem(VolumeCase(case_id, files, truth, relative),
                                  f"one sequence given twice ({shown}); keep one file per sequence"))
        else:
            cases.append(_check_case(case_id, files, truth, relative))
    cases.sort(key=lambda c: natural_key(c.case_id))
    return cases, skipped


def _role_rank(role: str) -> int:
    return CHANNELS.index(role) if role in CHANNELS else len(CHANNELS)


def _to_uint8(data: np.ndarray, path: Path) -> np.ndarray:
    """One sequence volume as uint8 by :data:`INTENSITY_RULE`."""
    if data.dtype == np.uint8:
        return data
    if data.dtype.kind in "iu" and data.size and data.min() >= 0 and data.max() <= 255:
        return data.astype(np.uint8)
    values = data.astype(np.float32)
    if not np.isfinite(values).all():
        raise ImageReadError(path, "volume holds NaN or infinite values")
    positive = values[values > 0]
    top = float(np.percentile(positive, 99.9)) if positive.size else 0.0
    if top <= 0:
        return np.zeros(values.shape, np.uint8)
    return np.round(np.clip(values * (255.0 / top), 0, 255)).astype(np.uint8)


def _voxels(path: Path) -> tuple[np.ndarray, Any]:
    img = _header(path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # a truncated or corrupt gzip stream, a short file
        raise ImageReadError(path, f"voxel data cannot be read ({type(err).__name__}: {err})") from None
    return data, img


@dataclass
class CaseVolume:
    """A case's slices: ``images`` uint8 (Z, H, W, 3) in display orientation, and the reference volume (the
    FLAIR or the 4D one) whose affine and header a mask volume keeps."""

    images: np.ndarray
    reference: Any = field(repr=False)
    layout: Layout = None


def load_case(case: VolumeCase) -> CaseVolume:
    """Voxels of a case as display-oriented uint8 RGB slices (:data:`CHANNELS` order, FLAIR substituted);
    raises :class:`ImageReadError` naming the file."""
    if case.problem:
        raise ImageReadError(case.first_file, case.problem)
    if "stack" in case.files:
        data, ref = _voxels(case.files["stack"])
        channels = [_to_uint8(data[..., k], case.files["stack"]) for k in range(len(CHANNELS))]
    else:
        loaded = {c: _voxels(p) for c, p in case.files.items()}
        ref = loaded["flair"][1]
        squeeze = {c: d.reshape(d.shape[:3]) for c, (d, _) in loaded.items()}
        channels = [_to_uint8(squeeze.get(c, squeeze["flair"]), case.files.get(c, case.files["flair"]))
                    for c in CHANNELS]
    return CaseVolume(to_display(np.stack(channels, axis=-1), case.layout), ref, case.layout)


def reference_image(case: VolumeCase) -> Any:
    """The volume whose affine and header a case's mask volume keeps (the 4D one, else FLAIR); header only."""
    return _header(case.files["stack"] if "stack" in case.files else case.files["flair"])


def load_truth(path: str | Path, shape: tuple[int, int, int] | None = None) -> tuple[np.ndarray, Layout, Any]:
    """A ground-truth volume as display-oriented uint8 (Z, H, W) in {0, 1} by the mask rule, its layout and image;
    ``shape`` (stored 3D), when given, must match. Raises :class:`ImageReadError` naming the file."""
    path = Path(path)
    data, img = _voxels(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageReadError(path, f"ground-truth volume of shape {data.shape}; expected 3D")
    if shape is not None and tuple(data.shape) != tuple(shape):
        raise ImageReadError(path, f"ground-truth shape {'x'.join(map(str, data.shape))} differs from the case's "
                                   f"{'x'.join(map(str, shape))}")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise ImageReadError(path, "mask has NaN or infinite values; expected 0 = background, one value = tumor")
    values = np.unique(data)
    nonzero = values[values != 0]
    if nonzero.size > 1:
        shown = ", ".join(f"{v:g}" for v in values[:6].tolist())
        raise ImageReadError(path, f"mask is not binary (values {shown}): expected 0 = background and one other "
                                   "value = tumor; for a label map (BraTS 1/2/4) save the whole tumor as one value")
    layout = layout_of(img.affine, path)
    return to_display((data != 0).astype(np.uint8), layout), layout, img


def write_mask_volume(path: str | Path, slices: np.ndarray, reference: Any) -> Path:
    """Display-oriented masks (Z, H, W) in {0, 1} as a uint8 NIfTI with ``reference``'s affine and header (4D
    references lose their channel axis), written atomically."""
    import nibabel as nib

    from classseg.utils.atomic import atomic_path

    layout = layout_of(reference.affine)
    data = from_display(np.asarray(slices, np.uint8), layout)
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(data, reference.affine, header)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"], image.header["cal_max"] = 0, 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return path


class _Cache:
    """The last few loaded cases (a patient's slices are read by several threads, and again for overlays)."""

    def __init__(self, size: int = 2) -> None:
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()
        self.loading: dict[Any, threading.Lock] = {}

    def get(self, key: Any, load: Any) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            key_lock = self.loading.setdefault(key, threading.Lock())
        with key_lock:
            with self.lock:
                if key in self.items:
                    return self.items[key]
            value = load()
            with self.lock:
                self.items[key] = value
                self.loading.pop(key, None)
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
            return value


_CASES = _Cache()
_TRUTHS = _Cache()


def case_slice(case: VolumeCase, index: int) -> np.ndarray:
    """Slice ``index`` of a case (uint8 (H, W, 3)), the case's voxels cached across calls."""
    return _CASES.get(("case", case.case_id, tuple(case.files.values())), lambda: load_case(case)).images[index]


def truth_slice(path: Path, index: int, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Slice ``index`` of a ground-truth volume (uint8 (H, W) in {0, 1}), cached across calls."""
    return _TRUTHS.get(("truth", str(path), shape), lambda: load_truth(path, shape))[0][index]


def parse_slice_name(name: str) -> tuple[str, int] | None:
    """(case, index) of a name written by :func:`slice_name`, or None."""
    m = re.match(r"^(?P<case>.+)/z(?P<index>\d+)$", name)
    return (m.group("case"), int(m.group("index"))) if m else None


class VolumeTruth:
    """The NIfTI ground truth under a folder, by case (``<case>_mask`` / ``<case>_seg``), for ``classseg evaluate``:
    :meth:`mask` gives the truth of a slice named ``<case>/z<k>``."""

    def __init__(self, truth_dir: str | Path) -> None:
        root = Path(truth_dir)
        self.files: dict[str, Path] = {}
        if not root.is_dir():
            return
        from classseg.data.walk import walk_following_links

        for dirpath, _, filenames in walk_following_links(root, skip_hidden=True):
            for name in filenames:
                if is_nifti(name) and not name.startswith("."):
                    case, role = _split_name(name)
                    if role == "truth":
                        folder = Path(dirpath).relative_to(root).as_posix()
                        self.files.setdefault(case if folder == "." else f"{folder}/{case}", Path(dirpath) / name)

    def __bool__(self) -> bool:
        return bool(self.files)

    def covers(self, image: str) -> bool:
        """True when ``image`` names a slice of a case with a ground-truth volume here."""
        parsed = parse_slice_name(image)
        return parsed is not None and parsed[0] in self.files

    def mask(self, image: str, shape: Sequence[int] | None = None) -> np.ndarray:
        """Ground truth of slice ``image`` (uint8 (H, W) in {0, 1}); raises :class:`ImageReadError` naming the file."""
        case, index = parse_slice_name(image)
        path = self.files[case]
        truth = _TRUTHS.get(("truth", str(path), None), lambda: load_truth(path))[0]
        if index >= len(truth):
            raise ImageReadError(path, f"has {len(truth)} axial slices; slice {index} was predicted")
        if shape is not None and truth[index].shape != tuple(shape):
            raise ImageReadError(path, f"slice shape {truth[index].shape} differs from the predicted mask's "
                                       f"{tuple(shape)}")
        return truth[index]


def display_affine(spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The affine of a volume stored as display slices stacked on the third axis (rows to posterior, columns to
    the patient's left, slices to superior: axis codes P, L, S): what :func:`write_case` writes."""
    affine = np.zeros((4, 4))
    affine[1, 0], affine[0, 1], affine[2, 2], affine[3, 3] = -spacing[0], -spacing[1], spacing[2], 1.0
    return affine


def write_case(folder: str | Path, case: str, images: np.ndarray, masks: np.ndarray | None = None,
               four_d: bool = False, affine: np.ndarray | None = None) -> list[Path]:
    """Write display slices (uint8 (Z, H, W, 3), channels :data:`CHANNELS`) as a NIfTI case by :data:`NAMING_RULE`:
    ``<case>_t1`` / ``_flair`` / ``_t1ce.nii.gz`` (or one 4D ``<case>.nii.gz``), and ``<case>_mask.nii.gz`` from
    ``masks`` (Z, H, W) when given; uint8, so reading the case back gives the same slices. ``affine`` (default
    :func:`display_affine`) is any orientation: the voxels are stored in it. Returns the files written."""
    import nibabel as nib

    from classseg.utils.atomic import atomic_path

    affine = display_affine() if affine is None else np.asarray(affine, float)
    layout = layout_of(affine)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images, np.uint8)
    stored = [from_display(images[..., k], layout) for k in range(len(CHANNELS))]
    volumes = ({case: np.stack(stored, axis=-1)} if four_d else
               {f"{case}_{name}": data for name, data in zip(("t1", "flair", "t1ce"), stored)})
    if masks is not None:
        volumes[f"{case}_mask"] = from_display((np.asarray(masks) != 0).astype(np.uint8), layout)
    written = []
    for name, data in volumes.items():
        path = folder / f"{name}.nii.gz"
        with atomic_path(path) as tmp:
            nib.save(nib.Nifti1Image(data, affine), str(tmp))
        written.append(path)
    return written


# -- slice references: a NIfTI slice where the training readers expect a file path ----------------------------------
#: ``<folder>/<case>@axial_<k>`` names slice ``k`` of a case, ``...@truth`` its ground truth; every reader
#: (:func:`classseg.data.io.read_image` / :func:`~classseg.data.io.read_mask`) reads them, so ``discover`` and
#: ``load_arrays`` (the training commands) take NIfTI cases like slice folders.
_REF = re.compile(r"^(?P<folder>.*)[/\\](?P<case>[^/\\]+)@axial_(?P<index>\d+)(?P<truth>@truth)?$")


def slice_ref(case: VolumeCase, root: str | Path, index: int, truth: bool = False) -> Path:
    """The reference of slice ``index`` of ``case`` (found under ``root``), or of its ground truth."""
    folder = Path(root) / case.relative.parent
    return folder / f"{Path(case.case_id).name}@axial_{index}{'@truth' if truth else ''}"


def is_slice_ref(path: str | Path) -> bool:
    """True for a reference made by :func:`slice_ref`."""
    return "@axial_" in str(path) and _REF.match(str(path)) is not None


def _case_at(folder: str, name: str) -> VolumeCase:
    key = ("at", folder, name)
    with _AT_LOCK:
        if key in _AT:
            return _AT[key]
    folder_path = Path(folder)
    roles: dict[str, Path] = {}
    truth = None
    for path in sorted(folder_path.iterdir()) if folder_path.is_dir() else []:
        if is_nifti(path.name) and not path.name.startswith("."):
            case, role = _split_name(path.name)
            if case == name and role == "truth":
                truth = truth or path
            elif case == name and not role.startswith("unused:"):
                roles.setdefault(role, path)
    if not roles:
        raise ImageReadError(folder_path / name, f"no NIfTI volumes of case {name!r} in {folder_path}")
    files = dict(sorted(roles.items(), key=lambda r: _role_rank(r[0])))
    found = _check_case(name, files, truth, Path(next(iter(files.values())).name))
    with _AT_LOCK:
        _AT[key] = found
    return found


_AT: dict[tuple[str, str, str], VolumeCase] = {}
_AT_LOCK = threading.Lock()


def read_ref(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """What a reference names: the slice as uint8 RGB (H, W, 3), or (``@truth``) its ground truth as uint8 (H, W)
    in {0, 1}, ``shape`` checked. Raises :class:`ImageReadError` naming the file."""
    m = _REF.match(str(path))
    case = _case_at(m.group("folder"), m.group("case"))
    index = int(m.group("index"))
    if case.problem:
        raise ImageReadError(case.files and case.first_file or path, case.problem)
    if not 0 <= index < case.n_slices:
        raise ImageReadError(case.first_file, f"has {case.n_slices} axial slices; slice {index} was asked for")
    if not m.group("truth"):
        return case_slice(case, index)
    if case.truth is None:
        raise ImageReadError(path, "the case has no ground-truth volume (<case>_mask.nii.gz or <case>_seg.nii.gz)")
    truth = truth_slice(case.truth, index, case.shape)
    if shape is not None and truth.shape != tuple(shape):
        raise ImageReadError(case.truth, f"slice shape {truth.shape} differs from the image's {tuple(shape)}")
    return truth
