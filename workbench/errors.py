"""Errors a user can act on.

A :class:`WorkbenchError` says what went wrong, about which file, node or tensor, and what to do
next (``hint``). Internal bugs stay ordinary exceptions. The CLI prints ``to_dict()`` and exits 1;
the UI shows message and hint in its status field.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = [
    "WorkbenchError",
    "ModelError",
    "EditError",
    "RecipeError",
    "CalibrationError",
    "BuildError",
    "BackendUnavailable",
    "DataError",
    "require",
]


class WorkbenchError(Exception):
    """A problem with the user's input or environment, with a hint on what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict[str, str]:
        """``{"error", "hint"}``, as the CLI prints it."""
        return {"error": self.message, "hint": self.hint}


class ModelError(WorkbenchError):
    """An ONNX model that cannot be loaded, checked or saved."""


class EditError(WorkbenchError):
    """An edit that names something missing or would break the graph."""


class RecipeError(WorkbenchError):
    """A recipe that cannot be read or does not fit its model."""


class DataError(WorkbenchError):
    """Input, calibration or comparison data that does not fit the model."""


class CalibrationError(WorkbenchError):
    """Calibration that cannot produce usable scales."""


class BuildError(WorkbenchError):
    """An engine build that failed, crashed, timed out or was cancelled."""


class BackendUnavailable(WorkbenchError):
    """A backend (TensorRT, a GPU runtime) that is not installed or cannot run here."""


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or raise a :class:`BackendUnavailable` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"the optional package '{module}' is not installed ({exc})",
            hint=f"pip install 'onnx-trt-workbench[{extra}]'",
        ) from exc
