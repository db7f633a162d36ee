"""Which low-precision layers break accuracy, and the fewest to keep in high precision to fix it.

:mod:`~workbench.debug.restore` makes the variants (a candidate with some layers back in FP32, or the reference
with only some in low precision); :mod:`~workbench.debug.sensitivity` ranks the layers; :mod:`~workbench.debug.plan`
searches the fewest to keep and measures each plan; :func:`debug_precision` does both.
"""

from __future__ import annotations

from .outliers import outlier_channel_model
from .plan import (
    PLAN_COLUMNS,
    DebugResult,
    MixedFactory,
    Plan,
    debug_precision,
    estimated_cost,
    evaluate,
    find_plan,
    mixed_models,
    mixed_plan,
    plan_recipe,
    recipe_models,
)
from .restore import Factory, isolate_layers, low_precision_layers, restore_layers
from .sensitivity import DIRECTIONS, SENSITIVITY_COLUMNS, SETTLED_Z, Sensitivity, sensitivity

__all__ = [
    "low_precision_layers",
    "restore_layers",
    "isolate_layers",
    "Factory",
    "sensitivity",
    "DIRECTIONS",
    "SETTLED_Z",
    "Sensitivity",
    "find_plan",
    "Plan",
    "estimated_cost",
    "evaluate",
    "plan_recipe",
    "recipe_models",
    "mixed_plan",
    "mixed_models",
    "MixedFactory",
    "debug_precision",
    "DebugResult",
    "outlier_channel_model",
    "SENSITIVITY_COLUMNS",
    "PLAN_COLUMNS",
]
