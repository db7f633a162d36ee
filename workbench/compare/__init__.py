"""Reference vs candidate: output metrics, layerwise metrics joined by tensor name, first divergence, local error.

:mod:`~workbench.compare.metrics` holds the metrics (tolerances, streaming error statistics, accuracy and output
error per sample); :mod:`~workbench.compare.driver` runs both models over the data (on threads or a Dask cluster)
and builds the :class:`CompareReport`.
"""

from __future__ import annotations

from .driver import LAYER_COLUMNS, MIN_SAMPLES, CompareReport, compare, joined_tensors, local_model
from .metrics import ErrorMetrics, ErrorStats, Metric, Tolerance, accuracy, output_error, run_metric

__all__ = [
    "Tolerance",
    "ErrorMetrics",
    "ErrorStats",
    "Metric",
    "accuracy",
    "output_error",
    "CompareReport",
    "compare",
    "joined_tensors",
    "local_model",
    "run_metric",
    "LAYER_COLUMNS",
    "MIN_SAMPLES",
]
