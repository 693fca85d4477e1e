"""Model cards: the JSON file beside a model that says how to feed it and how to read its output.

``segmenter.keras`` is described by ``segmenter.card.json``. The pipeline applies exactly what the
card states (input size and normalisation, probability threshold, post-processing, gate rule), so what
was chosen on validation travels with the model instead of living in command-line defaults.
nnU-Net's ``plans.json`` plays the same role there. Paths inside a card are relative to the card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from classseg.data.standardize import NORMALIZATIONS

ROLES = ("segmenter", "gate", "joint", "classifier")
#: How the final per-slice call combines the gate verdict with the (post-processed) mask.
GATE_RULES = ("gate", "gate_and_mask", "mask")


@dataclass
class ModelCard:
    """What a model needs and what was validated with it.

    - ``role``: segmenter | gate | joint | classifier.
    - ``img_size``: square input side in pixels; ``normalization``: ``raw`` (0..255, the model carries
      its own scaling) or ``patient_zscore`` (:mod:`classseg.data.standardize`).
    - ``threshold``: probability cut (mask pixels for a segmenter, tumor class for a gate).
    - ``postprocess``: :class:`classseg.postprocess.PostprocessConfig` fields (segmenter / joint).
    - ``gate_rule``: final call of a slice (gate): ``gate`` = the gate's verdict; ``gate_and_mask`` =
      verdict and a non-empty mask; ``mask`` = mask non-empty (gate ignored).
    - ``tta``: test-time flips averaged on the mask output (:data:`classseg.models.tta.TTA_MODES`:
      ``none``, ``hflip``, ``flips``), chosen on val.
    - ``postprocess_3d``: :class:`classseg.postprocess.Postprocess3DConfig` fields (per-patient 3D
      component filter across adjacent slices), chosen on val; None = off.
    - ``provenance``: free-form record (split, recipe, epochs, minutes, machine, val figures).
    """

    role: str
    img_size: int
    normalization: str = "raw"
    threshold: float = 0.5
    postprocess: dict[str, Any] | None = None
    gate_rule: str | None = None
    tta: str = "none"
    postprocess_3d: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"model card: role {self.role!r} is not one of {ROLES}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"model card: normalization {self.normalization!r} is not one of {NORMALIZATIONS}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"model card: threshold {self.threshold} is outside [0, 1]")
        if self.gate_rule is not None and self.gate_rule not in GATE_RULES:
            raise ValueError(f"model card: gate_rule {self.gate_rule!r} is not one of {GATE_RULES}")
        from classseg.models.tta import TTA_MODES

        if self.tta not in TTA_MODES:
            raise ValueError(f"model card: tta {self.tta!r} is not one of {tuple(TTA_MODES)}")
        if self.postprocess_3d is not None:
            self.postprocess_3d_config()  # raises on unknown fields or bad values

    def postprocess_3d_config(self) -> Any:
        """The card's :class:`Postprocess3DConfig`, or None when the 3D filter is off."""
        from classseg.postprocess import Postprocess3DConfig

        if not self.postprocess_3d:
            return None
        try:
            config = Postprocess3DConfig(**self.postprocess_3d)
        except TypeError as err:
            raise ValueError(f"model card: postprocess_3d {self.postprocess_3d!r}: {err}") from None
        if not 0.0 <= float(config.min_fraction) <= 1.0 or config.connectivity not in (6, 18, 26):
            raise ValueError(f"model card: postprocess_3d {self.postprocess_3d!r}: min_fraction must be in [0, 1] "
                             "and connectivity 6, 18 or 26")
        return config if config.min_fraction > 0 else None

    def postprocess_config(self) -> Any:
        """The card's :class:`PostprocessConfig` (threshold = the card's), or None."""
        from classseg.postprocess import PostprocessConfig

        if self.postprocess is None:
            return None
        known = {f.name for f in fields(PostprocessConfig)}
        return PostprocessConfig(**{k: v for k, v in self.postprocess.items() if k in known and k != "threshold"},
                                 threshold=float(self.threshold))


def card_path(model_path: str | Path) -> Path:
    """``dir/name.keras`` -> ``dir/name.card.json`` (also for ``.onnx`` and SavedModel folders)."""
    path = Path(model_path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.card.json")


def write_card(model_path: str | Path, card: ModelCard) -> Path:
    """Write the card beside ``model_path`` atomically; returns its path."""
    from classseg.runinfo import write_json

    return write_json(card_path(model_path), asdict(card))


def read_card(model_path: str | Path) -> ModelCard | None:
    """The card of ``model_path``, or None when it has none. Raises ``ValueError`` naming the file
    when the card exists but is not a valid card."""
    import json

    path = card_path(model_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        known = {f.name for f in fields(ModelCard)}
        return ModelCard(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a valid model card ({err})") from None
