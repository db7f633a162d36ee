"""The one shape-spec grammar, shared by the CLI (``--shapes``), the tabs and the TensorRT profiles.

``SPEC`` is one item per input, items separated by spaces or ``;``::

    name:1x3x224x224                                   one shape
    name:1x3x32x32,1x3x640x640,1x3x1280x1280           min,opt,max (where a range is allowed)
    name:?x3xHxW                                       ``?`` a dynamic dim, a word a symbolic one (where allowed)

Dims are joined by ``x``. :func:`parse_specs` reads the text only (no model); callers validate the names and dims
against their model (:func:`workbench.backends.trt_profiles.parse_shapes` for TensorRT profiles). Standard
library only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import DataError

__all__ = ["Dim", "ShapeSpec", "format_dims", "parse_specs", "split_items"]

Dim = int | str | None
"""A dim: a whole number, a symbolic name (str) or None (dynamic, written ``?``)."""

_INT = re.compile(r"^\d+$")
_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXAMPLE = "input:1x3x224x224"


@dataclass(frozen=True)
class ShapeSpec:
    """One item of a SPEC: the input ``name`` and its one shape, or three (min, opt, max)."""

    name: str
    shapes: tuple[tuple[Dim, ...], ...]

    @property
    def shape(self) -> tuple[Dim, ...]:
        """The one shape (the opt shape of a range)."""
        return self.shapes[len(self.shapes) // 2]


def split_items(spec: str | Sequence[str] | None) -> list[str]:
    """The items of a SPEC (a string or a list of strings; spaces and ``;`` separate items)."""
    if spec is None:
        return []
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [p for part in parts for p in re.split(r"[;\s]+", part) if p]


def format_dims(dims: Sequence[Dim]) -> str:
    """``(1, 3, None, "W")`` -> ``1x3x?xW``."""
    return "x".join("?" if d is None else str(d) for d in dims)


def _dims(text: str, where: str, symbolic: bool) -> tuple[Dim, ...]:
    text = text.strip()
    parts = text.split("x") if text else []
    dims: list[Dim] = []
    for part in parts:
        if _INT.match(part):
            dims.append(int(part))
        elif symbolic and part == "?":
            dims.append(None)
        elif symbolic and _SYMBOL.match(part):
            dims.append(part)
        else:
            dims = []
            break
    if not dims:
        hint = ("write dims joined by 'x', e.g. 1x3x224x224" + ("; ? for a dynamic dim, a word for a symbolic one"
                                                                  if symbolic else ""))
        raise DataError(f"{where}: '{text}' is not a shape", hint=hint)
    return tuple(dims)


def parse_specs(spec: str | Sequence[str] | None, *, ranges: bool = True, symbolic: bool = False,
                default_name: str | None = None, what: str = "--shapes") -> tuple[ShapeSpec, ...]:
    """Read a SPEC into one :class:`ShapeSpec` per input, in the order given.

    ``ranges``: an item may give min,opt,max (else one shape only). ``symbolic``: ``?`` and symbolic names are dims
    (else whole numbers only). ``default_name``: the input of an item without ``name:`` (a bare ``1x3``; only when
    the SPEC has one item). ``what`` names the SPEC in errors. Bad text is a DataError naming the item.
    """
    items = split_items(spec)
    out: dict[str, ShapeSpec] = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        if not sep and default_name is not None and len(items) == 1:
            name, dims = default_name, item
        elif not sep or not name:
            raise DataError(f"{what} '{item}' has no input name", hint=f"write NAME:DIMS, e.g. {_EXAMPLE}")
        where = f"{what} {item}"
        shapes = tuple(_dims(d, where, symbolic) for d in dims.split(","))
        if not ranges and len(shapes) != 1:
            raise DataError(f"{where}: give one shape per input, got {len(shapes)}",
                            hint=f"separate inputs with spaces or ';', e.g. {name}:1x3x224x224 other:1x8")
        if len(shapes) not in (1, 3):
            raise DataError(f"{where}: give one shape or three (min,opt,max), got {len(shapes)}",
                            hint=f"e.g. {name}:1x3x32x32,1x3x224x224,8x3x640x640")
        if name in out:
            raise DataError(f"{where}: input '{name}' is given twice", hint="give each input once")
        out[name] = ShapeSpec(name, shapes)
    return tuple(out.values())
