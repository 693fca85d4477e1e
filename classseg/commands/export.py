"""``classseg export MODEL --format onnx|savedmodel --out PATH``: export a trained model and check parity.

The model card travels with the export (issue 20): MODEL's card (``<stem>.card.json``) is checked against
MODEL (:func:`classseg.models.card.check_card`) and, once the parity check passes, written beside the
export (``<out stem>.card.json``) bound to the exported file: its ``model_sha256`` is the SHA-256 of the
``.onnx`` file (of the SavedModel folder's files), and ``provenance.exported_from`` records the source
model and its SHA-256. When the export's card path is MODEL's own (the default ``--out``, ``m.onnx``
beside ``m.keras``: both read ``m.card.json``) the card is shared: it stays bound to MODEL and lists the
export under ``exports`` with its SHA-256. A model without a card gets no card (a warning says so); a
stale card beside ``--out`` is removed, never left describing another file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from classseg.commands.options import command_parser


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``export``."""
    parser = command_parser(subparsers, "export", run, TEXT)
    parser.add_argument("model", help="trained model file (.keras)")
    parser.add_argument("--format", choices=("onnx", "savedmodel"), default="onnx")
    parser.add_argument("--out", help="output .onnx file or SavedModel folder "
                                      "(default: next to MODEL, <stem>.onnx or <stem>_savedmodel)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |keras - export| allowed (default 1e-4)")
    parser.add_argument("--samples", type=int, default=2, help="random images used for the parity check (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random parity images")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


#: ``classseg --help`` line and description.
TEXT = ("export a .keras model to ONNX or a TensorFlow SavedModel (with a parity check)",
        "Export a trained .keras model (augmentation layers stripped, float32) to ONNX or a TensorFlow SavedModel, "
        "then compare its outputs with Keras on random 0..255 inputs. Exits 1 when the max absolute difference "
        "exceeds --tolerance.")

def _check_options(args: argparse.Namespace) -> None:
    if args.samples < 1:
        raise SystemExit(f"classseg export: --samples {args.samples}: the parity check needs at least 1 image")


def _source_card(path: Path):
    """MODEL's card, checked against MODEL (one line on a card of another model); None without one."""
    from classseg.models.card import CardMismatchError, check_card, read_card

    try:
        card = read_card(path)
        notes = check_card(card, None, path)
    except (ValueError, CardMismatchError) as err:
        raise SystemExit(f"classseg export: {err}") from None
    for note in notes:
        print(f"warning: {note}")
    return card


def _write_export_card(card, source: Path, out: Path, result) -> None:
    """The source card beside the export, bound to it (hash of the export, source recorded); or, when both
    share one card path, the source's card listing the export under ``exports``."""
    from dataclasses import replace

    from classseg.models.card import card_path, model_sha256, write_card

    shared = card_path(out).resolve() == card_path(source).resolve()
    if card is None:
        if card_path(out).exists() and not shared:
            card_path(out).unlink()  # it described the file this export replaced
        print(f"warning: {source} has no model card, so none was written beside {out}; the pipeline will run "
              "it on defaults (raw pixels at its own size, threshold 0.5 or a sidecar's, gate rule 'gate')")
        return
    if shared:
        written = write_card(source, replace(card, exports={**(card.exports or {}), out.name: model_sha256(out)}))
        print(f"model card: {written} (shared with {source.name}; {out.name} listed under exports)")
        return
    provenance = {**card.provenance, "exported_from": {"model": str(source.resolve()),
                                                       "sha256": model_sha256(source), "format": result.format,
                                                       "opset": result.opset,
                                                       "parity_max_abs_diff": result.max_abs_diff}}
    written = write_card(out, replace(card, provenance=provenance, exports=None))
    print(f"model card: {written} (bound to {out.name})")


def _drop_export_card(card, source: Path, out: Path) -> None:
    """No card for an export that failed its parity check (a shared card only loses the export's entry)."""
    from dataclasses import replace

    from classseg.models.card import card_path, write_card

    if card_path(out).resolve() != card_path(source).resolve():
        card_path(out).unlink(missing_ok=True)
    elif card is not None and card.exports and out.name in card.exports:
        write_card(source, replace(card, exports={k: v for k, v in card.exports.items() if k != out.name} or None))


def run(args: argparse.Namespace) -> int:
    """Export, print the parity result; 0 on success, 1 on parity failure."""
    from classseg.models.export import (
        ParityError,
        check_savedmodel,
        export_onnx,
        export_savedmodel,
        load_model,
        sample_inputs,
    )
    from classseg.utils.guards import OutputError, check_output_file, check_writable_dir

    path = Path(args.model)
    if not path.is_file():
        raise SystemExit(f"classseg export: model file not found: {path}")
    _check_options(args)  # before anything is written
    out = Path(args.out) if args.out else path.with_name(
        f"{path.stem}.onnx" if args.format == "onnx" else f"{path.stem}_savedmodel")
    try:
        if args.format == "onnx":
            check_output_file(out, overwrite=getattr(args, "overwrite", False))
        else:
            if out.exists() and not getattr(args, "overwrite", False):
                raise OutputError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
            check_writable_dir(out.parent)
    except OutputError as err:
        raise SystemExit(f"classseg export: {err}") from None
    card = _source_card(path)
    try:
        model = load_model(path)
    except Exception as err:  # noqa: BLE001 - any load failure is a user-facing one-line error
        raise SystemExit(f"classseg export: cannot load {path}: {type(err).__name__}: {err}") from None
    x = sample_inputs(model, n=args.samples, seed=args.seed)
    try:
        if args.format == "onnx":
            result = export_onnx(model, out, opset=args.opset, parity_inputs=x, tolerance=args.tolerance,
                                 raise_on_failure=False)
        else:
            saved = export_savedmodel(model, out)
            result = check_savedmodel(model, saved, parity_inputs=x, tolerance=args.tolerance,
                                      raise_on_failure=False)
    except ValueError as err:  # e.g. a subclassed model with augmentation layers
        raise SystemExit(f"classseg export: {path}: {err}") from None
    print(result.summary())
    if not result.passed:
        _drop_export_card(card, path, out)
        print(f"classseg export: {ParityError(result)}")
        return 1
    _write_export_card(card, path, out, result)
    if args.format == "onnx" and card is not None and card.ensemble:
        return _export_members(card, path, args)
    return 0


def _export_members(card, path: Path, args: argparse.Namespace) -> int:
    """An ensemble card's other members exported beside themselves (``<member>.onnx``), each parity-checked, so
    that ``--backend onnx`` runs every member in ONNX Runtime without exporting them again."""
    from classseg.models.export import export_onnx, load_model, sample_inputs
    from classseg.models.predict import member_paths
    from classseg.utils.guards import OutputError, check_output_file

    try:
        members = member_paths(path, card)
    except (OSError, ValueError) as err:
        raise SystemExit(f"classseg export: {err}") from None
    for member in members:
        try:
            check_output_file(member.with_suffix(".onnx"), overwrite=getattr(args, "overwrite", False))
        except OutputError as err:
            raise SystemExit(f"classseg export: ensemble member: {err}") from None
        model = load_model(member)
        result = export_onnx(model, member.with_suffix(".onnx"), opset=args.opset, tolerance=args.tolerance,
                             parity_inputs=sample_inputs(model, n=args.samples, seed=args.seed),
                             raise_on_failure=False)
        print(f"ensemble member {member.name}: {result.summary()}")
        if not result.passed:
            member.with_suffix(".onnx").unlink(missing_ok=True)
            print(f"classseg export: ensemble member {member.name} failed its parity check")
            return 1
    return 0
