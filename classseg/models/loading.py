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
    "classseg.losses",
    "classseg.metrics",
)


def load_model(path: str | Path) -> Any:
    """Load a ``.keras`` model for inference: ``keras.saving.load_model(path, compile=False, safe_mode=True)``.

    The classseg modules that register custom objects are imported first (those not present in
    this build are skipped). A corrupt, truncated or empty file is refused by
    :func:`classseg.modelcheck.check_model_file` with a message saying so (Keras would say "File not found").
    """
    from classseg.modelcheck import check_model_file

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
