"""Pack the train/val patients of a split into small lossless folders for a lent GPU machine.

The device tool moves at most 64 MiB per call, the TIFF dataset is 237 MB. Slices are resized to
``--size`` (the training size, INTER_AREA as in training) and written as lossless WebP images and
PNG masks in the kaggle_3m layout, in ``--parts`` folders of whole patients, so each part travels
in one call and ``classseg train-segmenter`` reads the reassembled folder as it is. Test patients are
left out (they travel as the bundled sample). Lossless: every pixel of the resized slice is kept.

    python scripts/pack_for_device.py ../shared/data/kaggle_3m --splits data/splits/kaggle_3m_seed0.csv \
        --size 128 --parts 2 --out .gpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from classseg import data as cdata
from classseg.data.arrays import resize_image, resize_mask
from classseg.data.io import read_image, read_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--splits", required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--out", default=".gpu")
    args = parser.parse_args()
    frame = cdata.resolve_splits(cdata.discover(args.data_dir), args.splits)
    frame = frame[frame["split"] != "test"]
    patients = sorted(frame["patient_id"].unique())
    for k, pid in enumerate(patients):
        part = Path(args.out) / f"part{k % args.parts}" / pid
        part.mkdir(parents=True, exist_ok=True)
        for row in frame[frame["patient_id"] == pid].itertuples():
            image = resize_image(read_image(row.image_path), args.size)
            mask = resize_mask(read_mask(row.mask_path, shape=None), args.size) * 255
            stem = Path(row.image_path).stem
            cv2.imwrite(str(part / f"{stem}.webp"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_WEBP_QUALITY, 101])
            cv2.imwrite(str(part / f"{stem}_mask.png"), mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    for part in sorted(Path(args.out).glob("part*")):
        size = sum(f.stat().st_size for f in part.rglob("*") if f.is_file())
        print(f"{part}: {len(list(part.iterdir()))} patients, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
