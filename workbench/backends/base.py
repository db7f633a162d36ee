"""The small protocol every backend follows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..table import Table

__all__ = ["Backend", "Engine", "Feeds"]

Feeds = Mapping[str, np.ndarray]


@runtime_checkable
class Engine(Protocol):
    """Something that runs: an ONNX Runtime session or a TensorRT engine."""

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Run once on ``feeds`` ({input: array}); returns {output: array}."""
        ...

    def profile(self, feeds: Feeds, *, iterations: int = 20) -> Table:
        """Per-layer timings over ``iterations`` runs on ``feeds`` (the timing table schema of workbench.profile)."""
        ...

    def close(self) -> None:
        """Release the engine's resources."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A way to turn an ONNX model into an :class:`Engine`."""

    name: str

    def available(self) -> str | None:
        """None when usable here, else the reason it is not (shown greyed out in the UI)."""
        ...

    def build(self, model: Any, settings: Any = None, *, capture: tuple[str, ...] = ()) -> Engine:
        """An :class:`Engine` for ``model`` built with ``settings``; ``capture`` names extra tensors to output."""
        ...
