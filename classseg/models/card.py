"""Model cards: the JSON file beside a model that says how to feed it and how to read its output.

``segmenter.keras`` is described by ``segmenter.card.json``. The pipeline applies exactly what the
card states (input size and normalisation, class and mask thresholds, post-processing, gate rule), so what
was chosen on validation travels with the model instead of living in command-line defaults.
nnU-Net's ``plans.json`` plays the same role there. Paths inside a card are relative to the card.

Cards are bound to their model (issue 20): ``model_sha256`` is the SHA-256 of the model file the card
sits beside (:func:`model_sha256`; for a SavedModel folder, of its files), filled in by
:func:`write_card` whenever that file exists (and by :func:`bind_card` for a card written before its
model). :func:`check_card` compares role, input size and hash when a model is loaded: a card of
another model is refused in one line; a card without a hash (older cards) and a model without a
card are warnings. Every field is validated, types included, with a one-line error naming it.

Two thresholds, named apart (issue 19): ``class_threshold`` cuts a gate's (or a joint model's class
output's) P(tumor); the mask threshold is ``postprocess["threshold"]`` (:meth:`ModelCard.mask_threshold`).
Cards written before carry one ``threshold`` instead, still read as before: the class threshold of a
gate / classifier / joint card, and the mask threshold of a segmenter (or joint) card whose
``postprocess`` has none. Writers write the new names only (:func:`write_card` moves a ``threshold`` to them:
:meth:`ModelCard.upgraded`).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from classseg.data.standardize import NORMALIZATIONS, SEQUENCES
from classseg.delivery.rules import GATE_RULES

ROLES = ("segmenter", "gate", "joint", "classifier")
__all__ = ["GATE_RULES", "ROLES", "ModelCard", "bind_card", "card_path", "check_card", "model_sha256", "read_card",
           "write_card"]


@dataclass
class ModelCard:
    """What a model needs and what was validated with it.

    - ``role``: segmenter | gate | joint | classifier.
    - ``img_size``: square input side in pixels; ``normalization``: ``raw`` (0..255, the model carries
      its own scaling) or ``patient_zscore`` (:mod:`classseg.data.standardize`).
    - ``class_threshold``: P(tumor) cut of a gate / classifier / joint class output (None: not given).
    - ``postprocess``: :class:`classseg.delivery.postprocess.PostprocessConfig` fields (segmenter / joint); its
      ``threshold`` is the mask threshold (:meth:`mask_threshold`).
    - ``threshold``: older cards only (before issue 19), read as before (:meth:`class_cut`,
      :meth:`mask_threshold`); new cards leave it None.
    - ``gate_rule``: final call of a slice (:data:`classseg.delivery.rules.GATE_RULES`): ``gate`` = the
      gate's verdict; ``gate_and_mask`` = verdict and a non-empty mask; ``mask`` = mask non-empty (gate
      ignored).
    - ``tta``: test-time flips averaged on the mask output (:data:`classseg.models.tta.TTA_MODES`:
      ``none``, ``hflip``, ``flips``), chosen on val.
    - ``postprocess_3d``: :class:`classseg.delivery.postprocess.Postprocess3DConfig` fields (per-patient 3D
      component filter across adjacent slices), chosen on val; None = off.
    - ``context_slices``: slice context (2.5D, :mod:`classseg.data.context`): the model is fed each slice
      with this many neighbours of the same patient on each side as extra channels (3 * (2k + 1) in all);
      0 = one slice.
    - ``input_sequences``: ``all`` (the slice's three sequences) or ``flair`` (FLAIR in every channel:
      a model for patients missing pre- and post-contrast; :func:`classseg.data.standardize.use_sequences`).
    - ``flair_only_model``: ``{"file": name, "sha256": hex}`` beside the card, or None: the segmenter that
      replaces this card's model on the slices of patients whose pre- and post-contrast equal FLAIR
      (:func:`classseg.data.standardize.flair_only_rows`), fed as this card says, with its delivery.
    - ``ensemble``: the other members of an ensemble, ``[{"file": name, "sha256": hex}, ...]`` beside the
      card; the delivered probability is the mean over this card's model and them
      (:class:`classseg.models.predict.EnsembleRunner`); each member is fed as this card says. None = one model.
    - ``provenance``: free-form record (split, recipe, epochs, minutes, machine, val figures).
    - ``model_sha256``: SHA-256 of the model file the card describes (:func:`model_sha256`), None on
      older cards (a warning at load); ``model_file``: that file's name when the card was bound.
    - ``exports``: exports of that model that share this card because they sit beside it under the same
      stem (``classseg export m.keras`` writes ``m.onnx``, whose card path is ``m.card.json`` too):
      ``{file name: SHA-256}``; such a file is checked against its entry here.
    """

    role: str
    img_size: int
    normalization: str = "raw"
    threshold: float | None = None
    postprocess: dict[str, Any] | None = None
    gate_rule: str | None = None
    tta: str = "none"
    postprocess_3d: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    model_sha256: str | None = None
    model_file: str | None = None
    exports: dict[str, str] | None = None
    class_threshold: float | None = None
    context_slices: int = 0
    ensemble: list[dict[str, str]] | None = None
    input_sequences: str = "all"
    flair_only_model: dict[str, str] | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        from classseg.data.context import check_context

        try:
            check_context(self.context_slices)
        except ValueError as err:
            raise ValueError(f"model card: context_slices: {err}") from None
        _check_ensemble(self.ensemble)
        if self.flair_only_model is not None:
            if not isinstance(self.flair_only_model, dict):
                raise _type_error("flair_only_model", self.flair_only_model, "a {file, sha256} object or null")
            _check_ensemble([self.flair_only_model], "flair_only_model")
        if self.input_sequences not in SEQUENCES:
            raise ValueError(f"model card: input_sequences {self.input_sequences!r} is not one of {SEQUENCES}")
        if self.role not in ROLES:
            raise ValueError(f"model card: role {self.role!r} is not one of {ROLES}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"model card: normalization {self.normalization!r} is not one of {NORMALIZATIONS}")
        for name in ("threshold", "class_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"model card: {name} {value} is outside [0, 1]")
        if self.gate_rule is not None and self.gate_rule not in GATE_RULES:
            raise ValueError(f"model card: gate_rule {self.gate_rule!r} is not one of {GATE_RULES}")
        from classseg.models.tta import TTA_MODES

        if self.tta not in TTA_MODES:
            raise ValueError(f"model card: tta {self.tta!r} is not one of {tuple(TTA_MODES)}")
        if self.postprocess_3d is not None:
            self.postprocess_3d_config()  # raises on unknown fields or bad values

    def postprocess_3d_config(self) -> Any:
        """The card's :class:`Postprocess3DConfig`, or None when the 3D filter is off."""
        from classseg.delivery.postprocess import Postprocess3DConfig

        if not self.postprocess_3d:
            return None
        try:  # the config checks its own values
            config = Postprocess3DConfig(**self.postprocess_3d)
        except (TypeError, ValueError) as err:
            raise ValueError(f"model card: postprocess_3d {self.postprocess_3d!r}: {err}") from None
        return config if config.min_fraction > 0 else None

    def class_cut(self) -> float | None:
        """The P(tumor) cut: ``class_threshold``, else (older cards) ``threshold``; None when neither."""
        value = self.class_threshold if self.class_threshold is not None else self.threshold
        return None if value is None else float(value)

    def mask_threshold(self) -> float:
        """The mask threshold: ``postprocess["threshold"]``, else (older cards) ``threshold``, else 0.5.
        Never ``class_threshold`` (issue 19: the class threshold used to replace the mask threshold, so
        ``--joint`` drew other masks than the run scored)."""
        if self.postprocess and "threshold" in self.postprocess:
            return float(self.postprocess["threshold"])
        return 0.5 if self.threshold is None else float(self.threshold)

    def upgraded(self) -> ModelCard:
        """This card with an older card's ``threshold`` moved to the new names (``class_threshold`` for a
        gate / classifier / joint card; ``postprocess.threshold`` where ``postprocess`` has none), so that
        :meth:`class_cut`, :meth:`mask_threshold` and :meth:`postprocess_config` read the same values
        for the roles that use them. A card without ``threshold`` is returned as it is."""
        if self.threshold is None:
            return self
        changes: dict[str, Any] = {"threshold": None}
        if self.role in CARD_ROLES_FOR["classifier"] + CARD_ROLES_FOR["joint"] and self.class_threshold is None:
            changes["class_threshold"] = float(self.threshold)
        if self.postprocess is not None and "threshold" not in self.postprocess:
            changes["postprocess"] = {**self.postprocess, "threshold": float(self.threshold)}
        elif self.postprocess is None and self.role in ("segmenter", "joint") and float(self.threshold) != 0.5:
            changes["postprocess"] = {"threshold": float(self.threshold)}  # the mask threshold it stood for
        return replace(self, **changes)

    def mask_postprocess(self) -> Any:
        """The post-processing a user's masks get: :meth:`postprocess_config`, else the default
        :class:`PostprocessConfig` at :meth:`mask_threshold` (the pipeline and training read this one)."""
        from classseg.delivery.postprocess import PostprocessConfig

        return self.postprocess_config() or PostprocessConfig(threshold=self.mask_threshold())

    def postprocess_config(self) -> Any:
        """The card's :class:`PostprocessConfig` (mask threshold = :meth:`mask_threshold`), or None when
        the card records no post-processing."""
        from classseg.delivery.postprocess import PostprocessConfig

        if self.postprocess is None:
            return None
        known = {f.name for f in fields(PostprocessConfig)}
        return PostprocessConfig(**{k: v for k, v in self.postprocess.items() if k in known and k != "threshold"},
                                 threshold=self.mask_threshold())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_error(name: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"model card: {name} {value!r} must be {expected}, not {type(value).__name__}")


def _postprocess_types() -> dict[str, Any]:
    """PostprocessConfig fields and the types a card may give them (from the dataclass's defaults)."""
    from classseg.delivery.postprocess import PostprocessConfig

    kinds = {bool: bool, int: int, float: "number"}
    return {f.name: kinds.get(type(f.default), object) for f in fields(PostprocessConfig)}


def _check_types(card: ModelCard) -> None:
    """One-line ``ValueError`` naming the first field whose type or range is wrong."""
    for name in ("role", "normalization", "tta", "input_sequences"):
        if not isinstance(getattr(card, name), str):
            raise _type_error(name, getattr(card, name), "a string")
    if not isinstance(card.img_size, int) or isinstance(card.img_size, bool):
        raise _type_error("img_size", card.img_size, "a whole number of pixels")
    if not 8 <= card.img_size <= 8192:
        raise ValueError(f"model card: img_size {card.img_size} is outside 8..8192 pixels")
    for name in ("threshold", "class_threshold"):
        value = getattr(card, name)
        if value is not None and (not _is_number(value) or not math.isfinite(value)):
            raise _type_error(name, value, "a number in [0, 1] or null")
    if card.gate_rule is not None and not isinstance(card.gate_rule, str):
        raise _type_error("gate_rule", card.gate_rule, "a string or null")
    for name in ("postprocess", "postprocess_3d"):
        value = getattr(card, name)
        if value is not None and not isinstance(value, dict):
            raise _type_error(name, value, "an object (dict) or null")
    if not isinstance(card.provenance, dict):
        raise _type_error("provenance", card.provenance, "an object (dict)")
    if card.postprocess is not None:
        types = _postprocess_types()
        for key, value in card.postprocess.items():
            kind = types.get(key)
            if kind is None:
                raise ValueError(f"model card: postprocess has unknown field {key!r}; known: {', '.join(types)}")
            if kind is object:
                continue
            ok = (_is_number(value) and 0.0 <= float(value) <= 1.0) if kind == "number" else (
                isinstance(value, kind) and (kind is bool or not isinstance(value, bool)) and
                (kind is bool or value >= 0))
            if not ok:
                expected = {"number": "a number in [0, 1]", bool: "true or false", int: "a whole number >= 0"}[kind]
                raise _type_error(f"postprocess.{key}", value, expected)
    if card.model_sha256 is not None and (not isinstance(card.model_sha256, str)
                                          or not re.fullmatch(r"[0-9a-f]{64}", card.model_sha256)):
        raise ValueError(f"model card: model_sha256 {card.model_sha256!r} must be 64 lower-case hex digits or null")
    if card.model_file is not None and not isinstance(card.model_file, str):
        raise _type_error("model_file", card.model_file, "a file name or null")
    if card.exports is not None:
        if not isinstance(card.exports, dict):
            raise _type_error("exports", card.exports, "an object {file name: sha256} or null")
        for name, digest in card.exports.items():
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"model card: exports[{name!r}] {digest!r} must be 64 lower-case hex digits")


def _check_ensemble(ensemble: Any, what: str = "ensemble") -> None:
    """One-line ``ValueError`` unless ``ensemble`` is None or a list of ``{"file", "sha256"}`` objects
    (``what``: the field's name in the messages)."""
    if ensemble is None:
        return
    if not isinstance(ensemble, list) or not ensemble:
        raise _type_error(what, ensemble, "a non-empty list of {file, sha256} objects or null")
    for k, entry in enumerate(ensemble):
        where = what if what != "ensemble" else f"ensemble[{k}]"
        if not isinstance(entry, dict) or set(entry) != {"file", "sha256"}:
            raise ValueError(f"model card: {where} {entry!r} must be an object with exactly 'file' and 'sha256'")
        name, digest = entry["file"], entry["sha256"]
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise ValueError(f"model card: {where}.file {name!r} must be a file name beside the card")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"model card: {where}.sha256 {digest!r} must be 64 lower-case hex digits")


def card_path(model_path: str | Path) -> Path:
    """``dir/name.keras`` -> ``dir/name.card.json`` (also for ``.onnx`` and SavedModel folders)."""
    path = Path(model_path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.card.json")


def model_sha256(model_path: str | Path) -> str:
    """SHA-256 (hex) of a model file; for a folder (a SavedModel), of its files: the SHA-256 of the lines
    ``<relative posix path> <file sha256>``, sorted by path, each ending in a newline."""
    from classseg.utils.atomic import sha256_file

    path = Path(model_path)
    if path.is_dir():
        lines = "".join(f"{p.relative_to(path).as_posix()} {sha256_file(p)}\n"
                        for p in sorted(path.rglob("*")) if p.is_file())
        return hashlib.sha256(lines.encode()).hexdigest()
    return sha256_file(path)


def write_card(model_path: str | Path, card: ModelCard) -> Path:
    """Write the card beside ``model_path`` atomically; returns its path.

    When the model exists the card is bound to it (``model_sha256``, ``model_file``: :func:`model_sha256`),
    so write the model first; a hash given in ``card`` is kept only while the model file is missing. An
    older card's ``threshold`` is written under the new names (:meth:`ModelCard.upgraded`)."""
    from classseg.utils.jsonio import write_json

    path = Path(model_path)
    card = card.upgraded()
    if path.exists():
        card = replace(card, model_sha256=model_sha256(path), model_file=path.name)
    data = asdict(card)
    del data["threshold"]  # the pre-issue-19 name, read but never written
    return write_json(card_path(path), data)


def bind_card(model_path: str | Path, card: ModelCard | None = None, **changes: Any) -> ModelCard:
    """Bind a card to the model it sits beside and write it: ``card`` (default: the card already beside
    ``model_path``) with ``changes`` applied, ``model_sha256`` / ``model_file`` of the model file. Call it
    after the model's final bytes are written (e.g. ``scripts/ship_models.py`` after copying a model).
    Raises ``FileNotFoundError`` for a missing model or card, ``ValueError`` for an invalid card."""
    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model not found; a card is bound to an existing model file")
    card = card if card is not None else read_card(path)
    if card is None:
        raise FileNotFoundError(f"{card_path(path)}: no card to bind (pass one)")
    card = replace(card, **changes)
    write_card(path, card)
    return read_card(path)


def read_card(model_path: str | Path) -> ModelCard | None:
    """The card of ``model_path``, or None when it has none. Raises ``ValueError`` naming the file
    when the card exists but is not a valid card (not JSON, not an object, a missing or unknown field, a
    value of the wrong type or outside its range)."""
    import json

    path = card_path(model_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(ModelCard)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        missing = [name for name in ("role", "img_size") if name not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        return ModelCard(**data)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a valid model card ({err})") from None


#: Card roles a model may carry in each pipeline role (``--classifier`` is the gate).
CARD_ROLES_FOR = {"classifier": ("gate", "classifier"), "segmenter": ("segmenter",), "joint": ("joint",)}


class CardMismatchError(ValueError):
    """A card that does not belong to the model it sits beside (role, input size or hash)."""


def check_card(card: ModelCard | None, role: str | None, model_path: str | Path | None = None,
               input_hw: tuple[Any, Any] | None = None) -> list[str]:
    """Check a card against the model it is used with; return warnings, raise :class:`CardMismatchError`.

    * ``role`` (``classifier`` / ``segmenter`` / ``joint``, the pipeline's): the card's role must fit
      (:data:`CARD_ROLES_FOR`): a segmenter's card beside a gate is a swapped card.
    * ``input_hw``: the model's own input (H, W), None where free: a fixed size must be the card's
      ``img_size`` (the card would feed it another size).
    * ``model_path``: the card's ``model_sha256`` must be the file's (:func:`model_sha256`): a card copied
      from another model, or a model replaced after its card was written, is refused.
    Warnings: no card (the model runs on defaults: raw pixels at its own size, threshold from a sidecar
    or 0.5, rule ``gate``, default post-processing), or a card without ``model_sha256`` (cannot tell it
    belongs to this model)."""
    where = f"{model_path}" if model_path is not None else "in-memory model"
    if card is None:
        return [f"{where} has no model card ({card_path(model_path).name if model_path else '<model>.card.json'}): "
                "it runs on defaults (raw 0..255 pixels at its own input size, threshold from a JSON sidecar or "
                "0.5, gate rule 'gate', default post-processing)"]
    cpath = card_path(model_path) if model_path is not None else "its card"
    if role is not None and card.role not in CARD_ROLES_FOR.get(role, (role,)):
        raise CardMismatchError(f"{cpath} is the card of a {card.role}, but this model is used as the {role}: "
                                "the card belongs to another model (swapped or copied?); give each model its own "
                                "card")
    if input_hw is not None:
        fixed = [d for d in input_hw if isinstance(d, int) and d > 0]
        if fixed and any(d != card.img_size for d in fixed):
            shape = "x".join(str(d) if isinstance(d, int) else "?" for d in input_hw)
            raise CardMismatchError(f"{cpath} says img_size {card.img_size}, but the model takes {shape} inputs: the "
                                    "card belongs to another model")
    warnings = []
    if model_path is not None and Path(model_path).exists():
        name = Path(model_path).name
        expected = card.model_sha256
        if card.exports and name in card.exports and name != card.model_file:
            expected = card.exports[name]  # an export sharing the card of the model it came from
        if expected is None:
            warnings.append(f"{cpath} has no model_sha256: cannot tell that it belongs to {name} "
                            "(an older card; classseg.models.card.bind_card binds it)")
        else:
            actual = model_sha256(model_path)
            if actual != expected:
                made_for = f" ({card.model_file})" if card.model_file else ""
                raise CardMismatchError(f"{cpath} was made for another model file{made_for}: sha256 "
                                        f"{expected[:12]}... vs {actual[:12]}... of {model_path} (a card "
                                        "copied from another model, or the model replaced after its card was "
                                        "written); use the model's own card, or bind_card after checking it")
    return warnings
