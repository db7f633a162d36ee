"""The choices the CLI's options and the tabs' controls offer (calibration methods, Q/DQ targets, debug metrics, ...).

Plain constants, standard library only: ``workbench CMD --help`` builds its options from them without importing the
core or a numerical library. The core modules that use a choice import it from here, so each is defined once.
"""

from __future__ import annotations

__all__ = ["METHODS", "DEFAULT_METHOD", "TARGETS", "QUANT_DTYPES", "TARGET_METRICS", "METRICS", "DIRECTIONS",
           "LOW_PRECISIONS", "FP16_MAX", "TARGET_TOLERANCE"]

METHODS = ("max", "percentile", "entropy", "mse", "auto")
"""Calibration methods (:func:`workbench.calibration.compute_thresholds`)."""
DEFAULT_METHOD = "auto"
"""``auto``: entropy, or mse where entropy clips more than a small share of a tensor's values."""

TARGETS = ("tensorrt", "onnxruntime")
"""Whose Q/DQ fusion a quantized model is placed for (:func:`workbench.precision.quantize_model`)."""
QUANT_DTYPES = ("int8", "fp8")
"""Quantized types of the Q/DQ placement."""
TARGET_METRICS = ("rel_l2", "accuracy")
"""What quantization to a target accuracy measures (``workbench quantize --target-metric``)."""
TARGET_TOLERANCE = {"higher": 0.005, "lower": 0.05}
"""The target mode's default tolerance: for a higher-is-better metric (accuracy) the largest drop below FP32's
value (0.5 point), for an error (rel_l2) its largest value."""

METRICS = ("auto", "accuracy", "rel_l2")
"""What the debugger's plan must meet (``auto``: accuracy when the data has labels, else rel_l2)."""
DIRECTIONS = ("restore", "quantize_only")
"""Sensitivity directions: ``restore`` the candidate with only layer L back in FP32; ``quantize_only`` the FP32
reference with only L in low precision (as Polygraphy's / ONNX Runtime's qdq_loss_debug users expect)."""

LOW_PRECISIONS = ("fp16", "bf16")
"""Precisions of a Cast-node conversion (``workbench convert --precision``)."""
FP16_MAX = 65504.0
"""The largest finite fp16 value: the default range limit of an fp16 conversion."""
