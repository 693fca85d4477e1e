"""Export trained models to TensorFlow SavedModel and ONNX, with a numerical parity check.

Route (the one that worked for every classseg model on TF 2.21 / Keras 3.15 / tf2onnx 1.17):

    .keras  ->  inference-only float32 Functional model (augmentation layers stripped)
            ->  ``model.export(dir, format="tf_saved_model")`` with outputs keyed by output name
            ->  tf2onnx from that SavedModel (opset 17)  ->  parity check against Keras.

``tf2onnx.convert.from_keras`` fails on Sequential models and Keras's own
``model.export(format="onnx")`` gives EfficientNet spurious extra inputs, hence the SavedModel detour.
The exported models take raw RGB float32 0..255 like every classseg model (docs/design.md);
the batch dimension is dynamic (``batch``) and output names are the Keras ones (``mask``, ``class``).

Two ONNX-specific adjustments, both covered by the parity check: nearest ``UpSampling2D`` is
computed with a resize (one ONNX ``Resize`` instead of Tile/Transpose chains; the ResUNet's
Transpose/Tile share of ONNX Runtime time was ~1/3), and large graphs are converted with a
``gc.collect()`` before each tf2onnx optimizer (see :func:`_collecting_optimizers`).
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classseg.models.loading import load_model
from classseg.utils.runtime import available_cores, onnx_session

__all__ = ["ExportResult", "ParityError", "available_cores", "check_savedmodel", "export_onnx",
           "export_savedmodel", "load_model", "onnx_session", "parity"]

#: Keras augmentation layers (identity at inference) that never belong in an exported model.
_AUGMENTATION_NAMES = ("AugMix", "CutMix", "MixUp", "RandAugment", "Solarization", "GaussianNoise",
                       "GaussianDropout")


class ParityError(ValueError):
    """The exported model's outputs differ from Keras by more than the tolerance."""

    def __init__(self, result: ExportResult):
        super().__init__(f"parity check failed for {result.path}: max |keras - export| = "
                         f"{result.max_abs_diff:.3g} > tolerance {result.tolerance:.3g} "
                         f"(file kept for inspection)")
        self.result = result


@dataclass(frozen=True)
class ExportResult:
    """Outcome of an export: where it went and how close it is to the Keras model."""

    path: Path
    max_abs_diff: float
    per_output: dict[str, float]
    tolerance: float
    format: str = "onnx"
    opset: int | None = None
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    stripped_layers: tuple[str, ...] = ()
    parity_shape: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """True when every output is within ``tolerance``."""
        return bool(self.max_abs_diff <= self.tolerance)

    def summary(self) -> str:
        """Human-readable multi-line description (printed by ``classseg export``)."""
        lines = [f"exported ({self.format}{'' if self.opset is None else f', opset {self.opset}'}): {self.path}",
                 f"inputs: {', '.join(self.input_names)}   outputs: {', '.join(self.output_names)}"]
        if self.stripped_layers:
            lines.append(f"stripped augmentation layers: {', '.join(self.stripped_layers)}")
        lines.extend(self.notes)
        lines.append(f"parity on {self.parity_shape} float32 inputs (keras model(x, training=False) vs export):")
        for name, diff in self.per_output.items():
            lines.append(f"  {name}: max |diff| = {diff:.3g}")
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"parity {verdict}: max |diff| {self.max_abs_diff:.3g} vs tolerance {self.tolerance:.3g}")
        return "\n".join(lines)


def _as_model(model_or_path: Any) -> Any:
    return load_model(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path


def _is_augmentation(layer: Any) -> bool:
    import keras

    keras_layer = type(layer).__module__.startswith("keras.")
    name = type(layer).__name__
    return isinstance(layer, keras.layers.Layer) and keras_layer and (
        name.startswith("Random") or name in _AUGMENTATION_NAMES)


def _walk(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """All (path, layer) pairs, descending into nested models."""
    import keras

    out = []
    for layer in getattr(model, "layers", []):
        path = f"{prefix}{layer.name}"
        out.append((path, layer))
        if isinstance(layer, keras.Model):
            out.extend(_walk(layer, path + "/"))
    return out


def find_augmentation_layers(model: Any) -> list[str]:
    """Paths (``outer/inner``) of every augmentation layer (``Random*``, MixUp, ...) in ``model``."""
    return [path for path, layer in _walk(model) if _is_augmentation(layer)]


def _needs_float32(layer: Any) -> bool:
    policy = getattr(layer, "dtype_policy", None)
    return policy is not None and getattr(policy, "name", "float32") != "float32"


def _is_nearest_upsampling(layer: Any) -> bool:
    import keras

    return (isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest"
            and layer.data_format == "channels_last")


def inference_model(model: Any, resize_upsampling: bool = False) -> Any:
    """An inference-only float32 Functional copy of ``model`` sharing its weights.

    Augmentation layers (identity at inference) are removed, Sequential models become
    Functional, and mixed-precision layers are rebuilt in float32 with the same weights.
    ``resize_upsampling``: compute nearest ``UpSampling2D`` with ``keras.ops.image.resize``
    (same numbers; Keras's repeat-based version becomes Tile/Transpose chains in ONNX, the
    resize a single ``Resize`` node). Returns ``model`` itself when nothing needs changing.
    Raises ValueError for a subclassed model that contains augmentation layers.
    """
    import keras

    def needs(layer: Any) -> bool:
        return _is_augmentation(layer) or _needs_float32(layer) or (
            resize_upsampling and _is_nearest_upsampling(layer))

    is_functional = isinstance(model, keras.Model) and type(model).__name__ == "Functional"
    if is_functional and not any(needs(layer) for _, layer in _walk(model)):
        return model
    rebuilt: list[tuple[Any, Any]] = []  # (original, float32 copy) pairs whose weights are copied at the end
    new = _rebuild(model, needs, rebuilt)
    for old_layer, new_layer in rebuilt:
        new_layer.set_weights(old_layer.get_weights())
    return new


def _rebuild(model: Any, needs: Callable[[Any], bool], rebuilt: list[tuple[Any, Any]]) -> Any:
    """Rebuild a Sequential/Functional model for inference (recursive; see :func:`inference_model`)."""
    import keras

    def clone_layer(layer: Any) -> Any:
        if isinstance(layer, keras.Model):
            return _rebuild(layer, needs, rebuilt) if any(needs(x) for _, x in _walk(layer)) else layer
        if _needs_float32(layer):
            copy = type(layer).from_config({**layer.get_config(), "dtype": "float32"})
            rebuilt.append((layer, copy))
            return copy
        return layer  # shared: same weights

    def call_layer(layer: Any, *args: Any, **kwargs: Any) -> Any:
        x = args[0]
        if _is_augmentation(layer):
            return x  # identity at inference
        if needs(layer) and _is_nearest_upsampling(layer) and None not in x.shape[1:3]:
            size = (x.shape[1] * layer.size[0], x.shape[2] * layer.size[1])
            return keras.ops.image.resize(x, size, interpolation="nearest")
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        if not model.inputs:
            raise ValueError(f"Sequential model {model.name!r} is not built (no input shape); cannot export it")
        inputs = keras.Input(shape=model.inputs[0].shape[1:], name=model.inputs[0].name)
        x = inputs
        for layer in model.layers:
            x = call_layer(clone_layer(layer), x)
        return keras.Model(inputs, x, name=model.name)
    if type(model).__name__ == "Functional":
        return keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer)
    if any(_is_augmentation(layer) for _, layer in _walk(model)):
        raise ValueError(f"subclassed model {model.name!r} contains augmentation layers "
                         f"({', '.join(find_augmentation_layers(model))}); build it without them before exporting")
    return model


def _output_names(model: Any) -> list[str]:
    names = list(getattr(model, "output_names", None) or [])
    n_out = len(model.outputs) if getattr(model, "outputs", None) else 1
    return names if len(names) == n_out else [f"output_{i}" for i in range(n_out)]


def _named_outputs(model: Any) -> Any:
    """Functional model whose outputs are a dict keyed by the output layer names (names survive export)."""
    import keras

    if not getattr(model, "outputs", None):  # subclassed: wrap a symbolic call
        shape = model.input_shape[1:]
        inputs = keras.Input(shape=shape, name="image")
        outs = model(inputs, training=False)
        if isinstance(outs, Mapping):
            return keras.Model(inputs, dict(outs))
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return keras.Model(inputs, {f"output_{i}": o for i, o in enumerate(outs)})
    return keras.Model(model.inputs, dict(zip(_output_names(model), model.outputs, strict=True)), name=model.name)


def input_names(model: Any) -> list[str]:
    """Names the exported inputs get: the Keras Input names, or ``image`` / ``image_<i>`` when unnamed."""
    names = []
    for i, tensor in enumerate(model.inputs):
        name = getattr(tensor, "name", "") or ""
        auto = not name or name.startswith(("input_layer", "keras_tensor"))
        names.append(("image" if len(model.inputs) == 1 else f"image_{i}") if auto else name)
    return names


def _to_dict(outputs: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(outputs, Mapping):
        return {k: np.asarray(v, dtype=np.float32) for k, v in outputs.items()}
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, outputs, strict=True)}


def sample_inputs(model: Any, n: int = 2, seed: int = 0, free_size: int = 64) -> np.ndarray:
    """Random float32 pixels in 0..255 shaped like the model's input (None spatial dims -> ``free_size``)."""
    if int(n) < 1:
        raise ValueError(f"the parity check needs at least 1 sample image, got {n}")
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    dims = [free_size if d is None else int(d) for d in shape[1:]]
    return np.random.default_rng(seed).uniform(0.0, 255.0, size=(n, *dims)).astype(np.float32)


def export_savedmodel(model_or_path: Any, out_dir: str | Path) -> Path:
    """Write an inference-only float32 TensorFlow SavedModel to ``out_dir``.

    Signature ``serving_default``: input(s) named like the Keras inputs, outputs keyed by the
    Keras output names (e.g. ``mask`` and ``class`` for the joint model).
    """
    import tensorflow as tf

    model = _named_outputs(inference_model(_as_model(model_or_path)))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    names = input_names(model)
    signature = [tf.TensorSpec(t.shape, tf.float32, name=n) for t, n in zip(model.inputs, names, strict=True)]
    from classseg.utils.atomic import atomic_dir

    with atomic_dir(out_dir) as tmp:  # never a half-written SavedModel folder under out_dir
        model.export(str(tmp), format="tf_saved_model", verbose=False, input_signature=signature)
    return out_dir


def _convert_savedmodel(saved_dir: Path, opset: int) -> Any:
    """tf2onnx conversion of a SavedModel's ``serving_default`` signature -> ONNX ModelProto.

    Mirrors ``python -m tf2onnx.convert --saved-model DIR --opset N`` in-process.
    """
    import tensorflow as tf
    from tf2onnx import tf_loader
    from tf2onnx.convert import _convert_common

    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.ERROR)
    try:
        graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
            str(saved_dir), None, None, tag=["serve"], signatures=["serving_default"],
            return_initialized_tables=True, return_tensors_to_rename=True)
        with tf.device("/cpu:0"):
            proto, _ = _convert_common(graph_def, name=str(saved_dir), opset=opset, input_names=inputs,
                                       output_names=outputs, tensors_to_rename=renames,
                                       initialized_tables=tables,
                                       optimizers=_collecting_optimizers(graph_def.ByteSize()))
    finally:
        tf2onnx_logger.setLevel(level)
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    _modernise_nearest_resize(proto)
    return proto


#: Frozen graphs above this size get a ``gc.collect()`` before each tf2onnx optimizer (~0.5 s each).
_COLLECT_ABOVE_BYTES = 20_000_000


def _collecting_optimizers(graph_bytes: int) -> dict[str, Callable[[], Any]] | None:
    """tf2onnx's optimizer sequence, each preceded by ``gc.collect()`` for large graphs (else None: default).

    Hand-written work-around: ``tf2onnx.optimizer.optimize_graph`` deep-copies the whole graph
    before every optimizer; the discarded copies hold reference cycles and the large weight
    arrays, and Python's cyclic GC (triggered by object counts, not bytes) frees them late.
    Exporting a classifier with the paper's Flatten-Dense head (100 MB of weights) went past
    6 GB that way; collecting before each optimizer keeps the conversion at the size of the
    frozen graph (measured peak 3.4 GB in total for MobileNetV2 + paper head at 256 px).
    """
    from tf2onnx import optimizer

    if graph_bytes < _COLLECT_ABOVE_BYTES:
        return None
    try:
        factories = optimizer._get_optimizers()  # the default sequence (no public accessor)
    except AttributeError:
        return None

    def collecting(factory: Callable[[], Any]) -> Callable[[], Any]:
        def make() -> Any:
            gc.collect()
            return factory()

        return make

    return {name: collecting(factory) for name, factory in factories.items()}


def _modernise_nearest_resize(proto: Any) -> int:
    """Rewrite tf2onnx's deprecated ``tf_half_pixel_for_nn`` nearest ``Resize`` to ``asymmetric``.

    For whole-number scales s with ``nearest_mode=floor`` both give source index floor(i / s)
    (floor((i + 0.5) / s) = floor(i / s)), and ONNX Runtime stops warning about the deprecated
    mode at every session start. Other Resize nodes are left alone. Returns the count rewritten.
    """
    from onnx import helper, numpy_helper

    constants = {t.name: t for t in proto.graph.initializer}
    count = 0
    for node in proto.graph.node:
        if node.op_type != "Resize" or len(node.input) < 3 or node.input[2] not in constants:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        scales = numpy_helper.to_array(constants[node.input[2]])
        if (attrs.get("mode") == b"nearest" and attrs.get("coordinate_transformation_mode") == b"tf_half_pixel_for_nn"
                and attrs.get("nearest_mode") == b"floor" and scales.size and np.all(scales == np.round(scales))
                and np.all(scales >= 1)):
            for attr in node.attribute:
                if attr.name == "coordinate_transformation_mode":
                    attr.s = b"asymmetric"
            count += 1
    return count


def _feed(names: Sequence[str], inputs: Any) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        return {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, inputs, strict=True)}
    return {names[0]: np.asarray(inputs, dtype=np.float32)}


def parity(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, float]:
    """Max absolute difference per output name, ``max |reference - candidate|``."""
    missing = set(reference) ^ set(candidate)
    if missing:
        raise ValueError(f"output names differ between Keras and export: {sorted(missing)}")
    return {k: float(np.max(np.abs(reference[k] - np.asarray(candidate[k], np.float32)), initial=0.0))
            for k in reference}


def _reference(original: Any, exported: Any, inputs: Any) -> dict[str, np.ndarray]:
    """Keras outputs for the parity check: the original model unless it is mixed precision."""
    names = _output_names(exported)
    ref_model = exported if any(_needs_float32(layer) for _, layer in _walk(original)) else original
    if isinstance(inputs, Mapping):
        x = dict(inputs)
    elif isinstance(inputs, (list, tuple)):
        x = list(inputs)
    else:
        x = inputs
    return _to_dict(ref_model(x, training=False), names)


def _saturation_notes(reference: dict[str, np.ndarray]) -> tuple[str, ...]:
    """Warnings for degenerate Keras outputs: exactly 0/1 everywhere (saturated) or the same for every
    parity input (e.g. random-init backbones whose features vanish). Any two models agree there
    whatever happens inside, so the parity check proves little for those outputs."""
    notes = []
    for name, value in reference.items():
        if not value.size:
            continue
        if np.all((value == 0) | (value == 1)):
            what = "exactly 0/1 on every parity input (saturated)"
        elif len(value) > 1 and np.all(value == value[:1]):
            what = "identical for every parity input"
        else:
            continue
        notes.append(f"warning: Keras output {name!r} is {what}; parity says little here - "
                     "check with real images or trained weights")
    return tuple(notes)


def _check_parity_inputs(inputs: Any) -> None:
    """Refuse, before anything is written, parity inputs with no image (the check would prove nothing)."""
    if inputs is None:
        return
    values = list(inputs.values()) if isinstance(inputs, Mapping) else (
        list(inputs) if isinstance(inputs, (list, tuple)) else [inputs])
    if not values or any(len(np.asarray(v)) == 0 for v in values):
        raise ValueError("the parity check needs at least 1 input image (got none)")


def _finish(result: ExportResult, raise_on_failure: bool) -> ExportResult:
    if raise_on_failure and not result.passed:
        raise ParityError(result)
    return result


def export_onnx(model_or_path: Any, out_path: str | Path, opset: int = 17, parity_inputs: Any = None,
                tolerance: float = 1e-4, raise_on_failure: bool = True) -> ExportResult:
    """Export to ONNX (``opset``) via a temporary SavedModel and check parity with Keras.

    Parity: ``max |keras(x) - onnxruntime(x)|`` per output on ``parity_inputs`` (an array, a list
    or a dict by input name; default two random 0..255 images), the Keras side being the original
    model with ``training=False``. Raises :class:`ParityError` (file kept) when above
    ``tolerance`` unless ``raise_on_failure=False``; returns the :class:`ExportResult`.
    """
    import onnx

    _check_parity_inputs(parity_inputs)
    original = _as_model(model_or_path)
    model = inference_model(original, resize_upsampling=True)
    stripped = tuple(find_augmentation_layers(original))
    n_up = sum(_is_nearest_upsampling(layer) for _, layer in _walk(original))
    notes = (f"nearest UpSampling2D computed as Resize: {n_up} layer(s)",) if n_up else ()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="classseg_export_") as tmp:
        saved = export_savedmodel(model, Path(tmp) / "saved_model")
        proto = _convert_savedmodel(saved, opset)
    proto.doc_string = f"classseg export of Keras model {original.name!r}"
    onnx.helper.set_model_props(proto, {"classseg.input": "RGB float32 0..255, NHWC (preprocessing inside)",
                                        "classseg.source_model": str(original.name)})
    from classseg.utils.atomic import atomic_path

    with atomic_path(out_path) as tmp:
        onnx.save(proto, str(tmp))

    session = onnx_session(out_path)
    in_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    x = sample_inputs(model) if parity_inputs is None else parity_inputs
    feed = _feed(in_names, x)
    got = dict(zip(output_names, session.run(None, feed), strict=True))
    reference = _reference(original, model, x)
    diffs = parity(reference, got)
    first = next(iter(feed.values()))
    result = ExportResult(path=out_path, max_abs_diff=max(diffs.values()), per_output=diffs, tolerance=tolerance,
                          format="onnx", opset=opset, input_names=tuple(in_names),
                          output_names=tuple(output_names), stripped_layers=stripped,
                          parity_shape=tuple(first.shape), notes=notes + _saturation_notes(reference))
    return _finish(result, raise_on_failure)


def check_savedmodel(model_or_path: Any, saved_dir: str | Path, parity_inputs: Any = None,
                     tolerance: float = 1e-4, raise_on_failure: bool = True) -> ExportResult:
    """Parity of a SavedModel written by :func:`export_savedmodel` (``tf.saved_model.load``) with Keras."""
    import tensorflow as tf

    _check_parity_inputs(parity_inputs)
    original = _as_model(model_or_path)
    model = inference_model(original)
    loaded = tf.saved_model.load(str(saved_dir))
    signature = loaded.signatures["serving_default"]
    in_names = list(signature.structured_input_signature[1].keys())
    x = sample_inputs(model) if parity_inputs is None else parity_inputs
    feed = _feed(in_names, x)
    got = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in feed.items()}).items()}
    reference = _reference(original, model, x)
    diffs = parity(reference, got)
    first = next(iter(feed.values()))
    result = ExportResult(path=Path(saved_dir), max_abs_diff=max(diffs.values()), per_output=diffs,
                          tolerance=tolerance, format="savedmodel", input_names=tuple(in_names),
                          output_names=tuple(sorted(got)), stripped_layers=tuple(find_augmentation_layers(original)),
                          parity_shape=tuple(first.shape), notes=_saturation_notes(reference))
    return _finish(result, raise_on_failure)
