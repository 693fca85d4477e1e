"""Model builders: backbone registry, frozen-backbone classifiers, ResUNet, joint multi-task model.

Names are resolved lazily so that ``import classseg.models`` stays cheap and each builder module
imports TensorFlow only when used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BACKBONES": "classseg.models.backbones",
    "get_backbone": "classseg.models.backbones",
    "build_classifier": "classseg.models.classifier",
    "build_head": "classseg.models.classifier",
    "fine_tune": "classseg.models.classifier",
    "build_resunet": "classseg.models.resunet",
    "build_joint_model": "classseg.models.joint",
    "BackboneSpec": "classseg.models.backbones",
    "get_spec": "classseg.models.backbones",
    "CaffePreprocess": "classseg.models.backbones",
    "split_head": "classseg.models.classifier",
    "load_classifier": "classseg.models.classifier",
    "FrozenBackbone": "classseg.models.classifier",
    "load_model": "classseg.models.loading",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'classseg.models' has no attribute {name!r}")


def register_custom_objects() -> None:
    """Import every module that registers Keras-serialisable objects (for safe_mode loading)."""
    from classseg.models.loading import REGISTERING_MODULES

    for module in REGISTERING_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            pass


__all__ = sorted(_EXPORTS) + ["register_custom_objects"]
