"""Small helpers shared by the graph modules (package-private)."""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from onnx import TensorProto


def prod(dims: Iterable[int]) -> int:
    """The product of ``dims`` (each converted with int())."""
    out = 1
    for d in dims:
        out *= int(d)
    return out


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``model``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


# Element sizes of the fixed-size types whose large initializers the skeleton leaves out.
STRIPPABLE = {
    TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.DOUBLE: 8,
    TensorProto.INT8: 1, TensorProto.UINT8: 1,
    **{getattr(TensorProto, n): 1 for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
       if hasattr(TensorProto, n)},
}
