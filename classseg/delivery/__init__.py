"""Delivery: from a model's outputs to what a user receives (issue 19: the one home of the gate rule).

:mod:`classseg.delivery.rules` holds :data:`GATE_RULES`, :func:`final_calls`, :func:`segmented_slices`,
:func:`delivered_masks`, :func:`deliver_masks` and :func:`deliver` (the one order of operations:
2D post-processing → per-patient 3D filter over the slices the rule segments → resize back → rule).
Upstream of evaluation, training and the pipeline; it imports :mod:`classseg.delivery.postprocess` and NumPy only.
"""

from classseg.delivery.rules import (
    GATE_RULES,
    Delivery,
    MaskDelivery,
    calls_from_verdicts,
    check_rule,
    deliver,
    deliver_masks,
    delivered_masks,
    final_calls,
    gate_verdicts,
    segmented_slices,
    to_original_size,
)

__all__ = ["GATE_RULES", "Delivery", "MaskDelivery", "calls_from_verdicts", "check_rule", "deliver", "deliver_masks",
           "delivered_masks", "final_calls", "gate_verdicts", "segmented_slices", "to_original_size"]
