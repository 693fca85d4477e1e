"""Backbone names, listed once (importing this module does not import TensorFlow).

:data:`classseg.models.backbones.BACKBONES` builds exactly :data:`BACKBONE_NAMES` (checked when it is
imported); commands, profiles and configs take their lists from here.
"""

#: Every registered backbone, in registry order.
BACKBONE_NAMES = ("resnet50", "resnet50v2", "resnet101", "resnet152", "inceptionresnetv2", "efficientnetb0",
                  "efficientnetb7", "resunet_encoder", "resunet_decoder", "gate_encoder", "mobilenetv2")
#: The five backbones of seed paper 002, Table I.
PAPER_BACKBONES = ("resnet50", "resnet50v2", "inceptionresnetv2", "efficientnetb0", "mobilenetv2")
#: Two small ImageNet backbones for quick runs.
SMALL_BACKBONES = ("mobilenetv2", "efficientnetb0")
#: Every ImageNet backbone (run-all's paper profile).
IMAGENET_BACKBONES = ("resnet50", "resnet50v2", "inceptionresnetv2", "efficientnetb0", "efficientnetb7",
                      "mobilenetv2", "resnet101", "resnet152")


def parse_weights(value: object) -> str | None:
    """The one reading of a weights (or starting-model) option: None, ``""`` or ``"none"`` (any case, from a
    command line, notebook or JSON) -> None (random initialisation); anything else as a string, unchanged."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in ("none", "") else text
