"""Check a model against the role it is given (classifier, segmenter, joint) when it is loaded.

A classifier given as ``--segmenter`` would otherwise run and draw a full-image "mask" on every
slice; a 3-class classifier or a 2-channel segmenter would fail deep inside inference with a
traceback. Here each model's input (one RGB image, ``(N, H, W, 3)``) and outputs are compared with
its role before any slice is processed, and a problem becomes one :class:`ModelCheckError` whose
message names the role, the file and what is wrong (and, where it is clear, the role the model
looks made for). Corrupt or truncated ``.keras`` files are reported as such, not as "File not found".

Roles and the outputs they need:

* ``classifier``: one output ``(N, 2)`` softmax (index 1 = tumor) or ``(N, 1)`` sigmoid;
* ``segmenter``: one output ``(N, H, W, 1)`` sigmoid mask;
* ``joint``: a class output ``(N, 2)`` and a mask output ``(N, H, W, 1)``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("classifier", "segmenter", "joint")
_OPTION = {"classifier": "--classifier", "segmenter": "--segmenter", "joint": "--joint"}


class ModelCheckError(ValueError):
    """A model file that cannot be used in its role; the message names the role, the file and the problem."""


@dataclass
class Signature:
    """A model's input shape and output shapes (batch dimension included; unknown dims are None)."""

    inputs: list[tuple[Any, ...]]
    outputs: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def _dims(shape: Any) -> tuple[Any, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


def keras_signature(model: Any) -> Signature:
    """:class:`Signature` of a Keras model (dict, list or single outputs)."""
    inputs = [_dims(t.shape) for t in model.inputs]
    out = model.output
    if isinstance(out, dict):
        outputs = {k: _dims(v.shape) for k, v in out.items()}
    elif isinstance(out, (list, tuple)):
        names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(out))])
        outputs = {n: _dims(v.shape) for n, v in zip(names, out, strict=False)}
    else:
        names = list(getattr(model, "output_names", None) or ["output_0"])
        outputs = {names[0]: _dims(out.shape)}
    return Signature(inputs, outputs)


def onnx_signature(session: Any) -> Signature:
    """:class:`Signature` of an ONNX Runtime session."""
    return Signature([_dims(i.shape) for i in session.get_inputs()],
                     {o.name: _dims(o.shape) for o in session.get_outputs()})


def signature_of(obj: Any) -> Signature:
    """Signature of a Keras model, an ONNX Runtime session, or a pipeline runner holding either."""
    if hasattr(obj, "session") and hasattr(obj.session, "get_outputs"):
        return onnx_signature(obj.session)
    if hasattr(obj, "get_outputs") and hasattr(obj, "get_inputs"):
        return onnx_signature(obj)
    model = getattr(obj, "model", None)
    if model is not None and hasattr(model, "inputs"):
        return keras_signature(model)
    return keras_signature(obj)


def _fmt(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d)) for i, d in enumerate(shape)) + ")"


def _is_class(shape: tuple[Any, ...]) -> bool:
    return len(shape) == 2


def _is_mask(shape: tuple[Any, ...]) -> bool:
    return len(shape) == 4


def looks_like(sig: Signature) -> str | None:
    """The role a signature looks made for (by output ranks), or None."""
    ranks = sorted(len(s) for s in sig.outputs.values())
    if ranks == [2]:
        return "classifier"
    if ranks == [4]:
        return "segmenter"
    if ranks == [2, 4]:
        return "joint"
    return None


def check_signature(sig: Signature, role: str, source: str = "model") -> None:
    """Raise :class:`ModelCheckError` unless ``sig`` fits ``role`` (see the module docstring)."""
    if role not in ROLES:
        raise ValueError(f"unknown model role {role!r}; expected one of {', '.join(ROLES)}")
    where = f"{role} model {source}"
    if len(sig.inputs) != 1:
        raise ModelCheckError(f"{where}: has {len(sig.inputs)} inputs; expected one RGB image input (N, H, W, 3)")
    shape = sig.inputs[0]
    if len(shape) != 4:
        raise ModelCheckError(f"{where}: input shape {_fmt(shape)} does not fit; expected images (N, H, W, 3)")
    # a segmenter with slice context (classseg.data.context) takes 3 channels per neighbour: 9 for one each side
    context_ok = role == "segmenter" and shape[3] is not None and shape[3] % 3 == 0 and shape[3] // 3 % 2 == 1
    if shape[3] is not None and shape[3] != 3 and not context_ok:
        raise ModelCheckError(f"{where}: input has {shape[3]} channel(s) {_fmt(shape)}; classseg models take RGB "
                              "images (N, H, W, 3)" + (" (a segmenter with slice context: 3 per neighbour, 9, "
                                                       "15, ...)" if role == "segmenter" else ""))
    for d in shape[1:3]:
        if d is not None and d < 8:
            raise ModelCheckError(f"{where}: input size {_fmt(shape)} is too small for an MRI slice")
    outs = ", ".join(f"{n} {_fmt(s)}" for n, s in sig.outputs.items()) or "none"
    kind = looks_like(sig)
    hint = (f"; it looks like a {kind} (give it as {_OPTION[kind]})" if kind and kind != role else "")
    if role == "classifier":
        if len(sig.outputs) != 1 or not _is_class(next(iter(sig.outputs.values()))):
            raise ModelCheckError(f"{where}: outputs {outs}; a classifier has one class output (N, 2){hint}")
        n = next(iter(sig.outputs.values()))[1]
        if n is not None and n not in (1, 2):
            raise ModelCheckError(f"{where}: output {outs} has {n} classes; expected 2 (softmax, index 1 = tumor)")
    elif role == "segmenter":
        if len(sig.outputs) != 1 or not _is_mask(next(iter(sig.outputs.values()))):
            raise ModelCheckError(f"{where}: outputs {outs}; a segmenter has one mask output (N, H, W, 1){hint}")
        c = next(iter(sig.outputs.values()))[3]
        if c is not None and c != 1:
            raise ModelCheckError(f"{where}: mask output {outs} has {c} channels; expected 1 (sigmoid tumor "
                                  "probability)")
    else:
        classes = [s for s in sig.outputs.values() if _is_class(s)]
        masks = [s for s in sig.outputs.values() if _is_mask(s)]
        if len(classes) != 1 or len(masks) != 1 or len(sig.outputs) != 2:
            raise ModelCheckError(f"{where}: outputs {outs}; a joint model has a class output (N, 2) and a mask "
                                  f"output (N, H, W, 1){hint}")
        if classes[0][1] is not None and classes[0][1] not in (1, 2):
            raise ModelCheckError(f"{where}: class output has {classes[0][1]} classes; expected 2")
        if masks[0][3] is not None and masks[0][3] != 1:
            raise ModelCheckError(f"{where}: mask output has {masks[0][3]} channels; expected 1")


def check_model_role(model: Any, role: str, source: str | None = None) -> None:
    """Check a Keras model, an ONNX session or a pipeline runner against ``role``."""
    check_signature(signature_of(model), role, source or repr(getattr(model, "name", "in-memory model")))


def check_model_file(path: str | Path, role: str | None = None) -> Path:
    """A model file that exists, is not empty and, for ``.keras``, is a whole Keras zip archive."""
    path = Path(path)
    where = f"{role} model {path}" if role else str(path)
    if not path.exists():
        raise ModelCheckError(f"{where}: file not found")
    if path.is_dir():
        raise ModelCheckError(f"{where}: is a folder; expected a .keras or .onnx file")
    size = path.stat().st_size
    if size == 0:
        raise ModelCheckError(f"{where}: file is empty (0 bytes; an interrupted save?)")
    if path.suffix.lower() == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as err:
            raise ModelCheckError(f"{where}: corrupt or truncated .keras file ({size} bytes; not a readable zip "
                                  f"archive: {err})") from None
        if "config.json" not in names:
            raise ModelCheckError(f"{where}: not a Keras model archive (no config.json inside)")
    return path


def load_checked(role: str, model_or_path: Any, make: Callable[[Any], Any]) -> Any:
    """``make(model_or_path)`` (a loader / runner factory), with the file and the result checked for ``role``.

    Every failure is a :class:`ModelCheckError` naming the role and this one model.
    """
    is_path = isinstance(model_or_path, (str, Path))
    source = str(model_or_path) if is_path else repr(getattr(model_or_path, "name", "in-memory model"))
    if is_path:
        check_model_file(model_or_path, role)
    try:
        loaded = make(model_or_path)
    except ModelCheckError:
        raise
    except Exception as err:  # noqa: BLE001 - any load failure becomes one line naming this model
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelCheckError(f"{role} model {source}: cannot load: {type(err).__name__}: {first}") from err
    check_signature(signature_of(loaded), role, source)
    return loaded
