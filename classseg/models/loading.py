"""Loading a saved classseg model (``.keras``) for inference, with every custom object registered."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

#: Modules whose import registers custom layers / losses / metrics for ``safe_mode`` loading.
REGISTERING_MODULES = (
    "classseg.models",
    "classseg.models.backbones",
    "classseg.models.classifier",
    "classseg.models.resunet",
    "classseg.models.joint",
    "classseg.models.losses",
    "classseg.models.metrics",
)


def load_model(path: str | Path) -> Any:
    """Load a ``.keras`` model for inference: ``keras.saving.load_model(path, compile=False, safe_mode=True)``.

    The classseg modules that register custom objects are imported first (those not present in
    this build are skipped). A corrupt, truncated or empty file is refused by
    :func:`classseg.models.check.check_model_file` with a message saying so (Keras would say "File not found").
    """
    from classseg.models.check import check_model_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    check_model_file(path)
    for name in REGISTERING_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None or not name.startswith(err.name):
                raise
    import keras

    return keras.saving.load_model(path, compile=False, safe_mode=True)


def copy_weights_by_name(model: Any, source: Any, label: str | Path | None = None) -> list[str]:
    """Copy into ``model`` the weights of every layer of ``source`` (a ``.keras`` path, or a model already
    loaded) that has the same name and weight shapes (in-domain transfer: a trained ResUNet segmenter
    gives a ResUNet joint model or encoder its convolutions; layers it lacks, e.g. a class head, keep
    their initialisation). Fully convolutional layers copy across input sizes. Returns the names of the
    layers copied.

    Raises ``ValueError`` naming the file (``label``, else ``source``) when no layer matches (another
    architecture or width).
    """
    path = label if label is not None else source
    if isinstance(source, (str, Path)):
        source = load_model(source)
    by_name = {layer.name: layer for layer in source.layers}
    copied = []
    for layer in model.layers:
        src = by_name.get(layer.name)
        if not layer.weights or src is None:
            continue
        if [tuple(w.shape) for w in src.weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(src.get_weights())
            copied.append(layer.name)
    if not copied:
        raise ValueError(f"{path}: none of its layers fits this model by name and shape (another architecture, "
                         "width or input size)")
    return copied
