"""ipywidgets panels: the dashboard and its tabs. Widgets read controls, call one Session/API function,
show the result; they never compute."""

from __future__ import annotations

from typing import Any

__all__ = ["Workbench"]


def __getattr__(name: str) -> Any:
    if name == "Workbench":
        from .dashboard import Workbench

        return Workbench
    raise AttributeError(name)
