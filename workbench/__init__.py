"""ONNX -> TensorRT workbench: inspect, edit, set precision, calibrate, build, profile, debug.

``import workbench`` loads no UI, plotting or runtime library: names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "WorkbenchError": "errors",
    "Table": "table",
    "load_model": "graph",
    "save_model": "graph",
    "summary": "graph",
    "layer_table": "graph",
    "sample_path": "graph",
    "sample_names": "graph",
    "Recipe": "recipe",
    "Session": "session",
    "check_model": "check",
    "convert_precision": "precision",
    "quantize_model": "precision",
    "calibrate": "calibration",
    "ScaleCache": "calibration",
    "build_engine": "build",
    "trtexec_command": "build",
    "from_trtexec": "profile",
    "compare_profiles": "profile",
    "profile_model": "backends.ort_profile",
    "sensitivity": "debug",
    "find_plan": "debug",
    "debug_precision": "debug",
    "Workbench": "ui",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
