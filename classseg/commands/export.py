"""``classseg export MODEL --format onnx|savedmodel --out PATH``: export a trained model and check parity."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``export``."""
    parser = subparsers.add_parser(
        "export", help="export a .keras model to ONNX or a TensorFlow SavedModel (with a parity check)",
        description="Export a trained .keras model (augmentation layers stripped, float32) to ONNX or a "
                    "TensorFlow SavedModel, then compare its outputs with Keras on random 0..255 inputs. "
                    "Exits 1 when the max absolute difference exceeds --tolerance.")
    parser.add_argument("model", help="trained model file (.keras)")
    parser.add_argument("--format", choices=("onnx", "savedmodel"), default="onnx")
    parser.add_argument("--out", help="output .onnx file or SavedModel folder "
                                      "(default: next to MODEL, <stem>.onnx or <stem>_savedmodel)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |keras - export| allowed (default 1e-4)")
    parser.add_argument("--samples", type=int, default=2, help="random images used for the parity check")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random parity images")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, print the parity result; 0 on success, 1 on parity failure."""
    from classseg.export import (
        ParityError,
        check_savedmodel,
        export_onnx,
        export_savedmodel,
        load_model,
        sample_inputs,
    )
    from classseg.guards import OutputError, check_output_file, check_writable_dir

    path = Path(args.model)
    if not path.is_file():
        raise SystemExit(f"classseg export: model file not found: {path}")
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
        print(f"classseg export: {ParityError(result)}")
        return 1
    return 0
