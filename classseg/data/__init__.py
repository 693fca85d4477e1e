"""Data layer: discovery, patient-level splits, in-memory arrays, tf.data pipelines, augmentation."""

from __future__ import annotations

from classseg.data.arrays import SliceArrays, load_arrays, resize_image, resize_mask
from classseg.data.augment import AugmentConfig, build_augmenter
from classseg.data.discovery import discover, slice_number, summarize
from classseg.data.io import IMAGE_EXTENSIONS, ImageReadError, is_image_file, is_mask_file, read_image, read_mask
from classseg.data.splits import (
    apply_splits,
    check_listed_patients,
    kfold_patients,
    link_patients,
    load_splits,
    resolve_splits,
    save_splits,
    split_patients,
    split_table,
)
from classseg.data.walk import FoundImage, natural_key, walk_images
from classseg.utils.paths import default_data_dir

DEFAULT_DATA_DIR = default_data_dir()


def __getattr__(name: str):
    # tf.data pipelines import TensorFlow; keep `import classseg.data` light for the CLI.
    if name in ("classification_dataset", "segmentation_dataset"):
        from classseg.data import datasets

        return getattr(datasets, name)
    raise AttributeError(name)


__all__ = [
    "DEFAULT_DATA_DIR", "IMAGE_EXTENSIONS", "AugmentConfig", "FoundImage", "link_patients", "natural_key",
    "walk_images", "ImageReadError", "SliceArrays", "apply_splits", "check_listed_patients",
    "build_augmenter", "classification_dataset", "default_data_dir", "discover", "is_image_file", "is_mask_file",
    "kfold_patients", "load_arrays", "load_splits", "read_image", "read_mask", "resize_image", "resize_mask",
    "resolve_splits", "save_splits", "segmentation_dataset", "slice_number", "split_patients", "split_table",
    "summarize",
]
