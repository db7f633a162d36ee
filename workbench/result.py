"""The base of every typed result: a frozen dataclass whose ``to_dict()`` gives plain JSON types.

Standard library only and in the lowest layer, so the core's results (:class:`workbench.graph.ModelSummary`, ...)
and the workflows' (:mod:`workbench.workflows`) share it; ``workbench --json`` prints ``to_dict()``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Result", "jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: dataclasses and mappings as dicts, sequences as lists, paths as str, numpy
    scalars and arrays as numbers and lists, non-finite floats as None."""
    if isinstance(value, Result):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        if callable(to_dict):
            return jsonable(to_dict())
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return jsonable(tolist())
    return str(value)


@dataclasses.dataclass(frozen=True)
class Result:
    """Base of every typed result (the core's and the workflows'): a frozen dataclass; ``to_dict()`` gives plain JSON
    types."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (nested results included)."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
