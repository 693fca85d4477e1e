"""Ensembles of trained segmenters: K members, their mean probability, the delivery chosen on val.

``classseg ensemble MODEL MODEL ... DATA --splits FILE --out DIR`` copies the members into ``DIR``
(``segmenter.keras`` = the first, ``segmenter.member<k>.keras`` the others, each re-saved without
optimizer state), scores their mean probability with :func:`classseg.training.segmenter.score_segmenter`
(flips, 2D post-processing and the per-patient 3D filter chosen on the val patients; val, the val stress
sets and test scored at the slices' original size) and writes the card of ``segmenter.keras`` naming the
other members with their SHA-256 (:attr:`classseg.models.card.ModelCard.ensemble`), so the pipeline runs
the same ensemble (Keras or ONNX Runtime). Members may be snapshots of one run or runs with other seeds;
all must share the first member's input size, normalisation and slice context.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from classseg import data as cdata
from classseg.models.card import ModelCard, model_sha256, read_card, write_card
from classseg.utils.environment import machine
from classseg.utils.guards import check_start_models
from classseg.utils.jsonio import write_json


@dataclass
class EnsembleConfig:
    """The members (``.keras`` segmenter files, the first one's card decides how they are fed) and how the
    ensemble is scored: ``batch_size`` of prediction; ``select_postprocess``: choose the delivery on val."""

    members: list[str] = field(default_factory=list)
    batch_size: int = 32
    select_postprocess: bool = True

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(self.members)}")


def member_cards(members: list[str]) -> list[ModelCard]:
    """The members' cards, checked to feed alike (size, normalisation, context); ``ValueError`` naming the
    member that differs or has no card."""
    cards = []
    for path in members:
        card = read_card(path)
        if card is None or card.role != "segmenter":
            raise ValueError(f"{path}: an ensemble member needs its segmenter card (how it is fed)")
        cards.append(card)
    first = cards[0]
    for path, card in zip(members[1:], cards[1:], strict=True):
        for name in ("img_size", "normalization", "context_slices"):
            if getattr(card, name) != getattr(first, name):
                raise ValueError(f"{path}: {name} {getattr(card, name)!r} differs from the first member's "
                                 f"{getattr(first, name)!r}; ensemble members must be fed alike")
    return cards


def make_ensemble(config: EnsembleConfig, data_dir: str | Path, splits_path: str | Path,
                  out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Copy the members into ``out_dir``, choose the ensemble's delivery on val, score val, stress sets and
    test, and write ``segmenter.keras`` + card, the members, ``metrics.json`` and ``splits.csv``."""
    import keras

    from classseg.training.segmenter import SegmenterConfig, _select, score_segmenter

    cards = member_cards(config.members)
    first = cards[0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = cdata.resolve_splits(cdata.discover(data_dir), splits_path)
    # the members must not have trained on this split's val or test patients
    leakage = check_start_models(cdata.split_table(frame), config.members, val_may_stay_val=True)
    cdata.save_splits(cdata.split_table(frame), out / "splits.csv")
    val = cdata.load_arrays(_select(frame, "val", False), first.img_size, progress=progress)
    test = cdata.load_arrays(_select(frame, "test", False), first.img_size, progress=progress)
    models = [keras.models.load_model(path, compile=False) for path in config.members]
    seg_config = SegmenterConfig(img_size=first.img_size, normalization=first.normalization,
                                 context=first.context_slices, batch_size=config.batch_size,
                                 select_postprocess=config.select_postprocess)
    scored = score_segmenter(models, seg_config, val, test)
    names = ["segmenter.keras", *[f"segmenter.member{k}.keras" for k in range(1, len(models))]]
    for model, name in zip(models, names, strict=True):
        model.save(out / name)
    chosen, chosen_3d = scored["postprocess"], scored["postprocess_3d"]
    metrics: dict[str, Any] = {
        "model": "resunet ensemble", "members": [str(p) for p in config.members], "files": names,
        "img_size": first.img_size, "normalization": first.normalization, "context": first.context_slices,
        "split_file": str(splits_path), "data_dir": str(data_dir), "machine": machine(),
        "leakage_check": leakage, "scored_at": "original slice size",
        "evaluated_on": "mean probability of the members; flips, post-processing and 3D filter chosen on val",
        "threshold": chosen.threshold, **scored["test"], "postprocess_chosen": asdict(chosen), "tta": scored["tta"],
        "postprocess_3d": asdict(chosen_3d) if chosen_3d else None,
        "val": scored["val"], "val_robustness": scored["val_robustness"],
    }
    write_json(out / "metrics.json", metrics)
    write_card(out / names[0], ModelCard(
        role="segmenter", img_size=first.img_size, normalization=first.normalization,
        context_slices=first.context_slices, postprocess=asdict(chosen), tta=scored["tta"],
        postprocess_3d=asdict(chosen_3d) if chosen_3d else None,
        ensemble=[{"file": name, "sha256": model_sha256(out / name)} for name in names[1:]],
        provenance={"kind": "ensemble", "members": [{"from": str(p), "provenance": c.provenance}
                                                   for p, c in zip(config.members, cards, strict=True)],
                    "split_file": str(splits_path), "machine": metrics["machine"],
                    "val": {k: scored["val"].get(k) for k in ("dice_tumor_slices", "dice_per_patient",
                                                              "hd95_detected_px", "accuracy", "sensitivity")},
                    "val_robustness": scored["val_robustness"]}))
    return metrics
