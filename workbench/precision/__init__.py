"""Precision as graph edits: Cast nodes for fp16/bf16 regions, Q/DQ nodes for int8/fp8.

TensorRT 11 and TensorRT-RTX build strongly typed networks: the precision of every layer is what the ONNX
graph says, so this package writes the precision *into the graph* and never sets builder flags.

What lives where (everything below is importable from ``workbench.precision``):

- :mod:`.convert`: fp16/bf16 through Cast nodes: :func:`precision_guards`, :func:`plan_conversion`,
  :func:`convert_precision` (``ranges=`` measured activation ranges keep out-of-range nodes float32),
  :func:`float_tensors` (what to calibrate for those ranges).
- :mod:`.scales`: calibration results: :class:`TensorStats`, :class:`ScaleCache`, :func:`latest_scales`.
- :mod:`.qdq`: int8/fp8 Q/DQ placed for TensorRT (the rules and their sources): :func:`quantization_targets`,
  :func:`quantizable_nodes`, :func:`activation_tensors`, :func:`check_dtype`, :func:`check_target`,
  :func:`quantize_model`.
- :mod:`.qdq_ort`: the int8 placement for ONNX Runtime's CPU provider (``quantize_model(..., target="onnxruntime")``).
- :mod:`.upcast`: an fp16-computing model quantized in float32 for that placement (ORT's integer kernels take
  float32 only); the TensorRT placement puts float16 Q/DQ (opset 19) on it instead.
- :mod:`.summary`: :data:`PRECISIONS`, :func:`node_precisions`, :func:`weight_bytes`.
- :mod:`._common`: :func:`select_nodes` and the graph helpers the others share.
- here: :func:`apply_precision_edit`, which applies a recipe's precision edit through the modules above.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from ..errors import RecipeError
from ..recipe import ConvertPrecision, Edit, Quantize
from ._common import QDQ_FLOATS, select_nodes
from .convert import FP16_MAX as FP16_MAX  # public, though not in __all__ (as before the split)
from .convert import FP16_TINY as FP16_TINY
from .convert import convert_precision, float_tensors, plan_conversion, precision_guards
from .qdq import (
    TARGETS,
    WEIGHTED_OPS,
    activation_tensors,
    check_dtype,
    check_target,
    output_heads,
    quantizable_nodes,
    quantization_targets,
    quantize_model,
)
from .scales import ScaleCache, TensorStats, latest_scales
from .summary import PRECISIONS, node_precisions, onnxruntime_only_qdq, weight_bytes

__all__ = [
    "PRECISIONS",
    "QDQ_FLOATS",
    "TARGETS",
    "WEIGHTED_OPS",
    "ScaleCache",
    "TensorStats",
    "precision_guards",
    "select_nodes",
    "plan_conversion",
    "convert_precision",
    "float_tensors",
    "quantizable_nodes",
    "quantization_targets",
    "activation_tensors",
    "quantize_model",
    "output_heads",
    "check_dtype",
    "check_target",
    "latest_scales",
    "apply_precision_edit",
    "node_precisions",
    "onnxruntime_only_qdq",
    "weight_bytes",
]


def apply_precision_edit(
    model: onnx.ModelProto, edit: Edit, *, cache_dir: str | os.PathLike[str] | None = None
) -> onnx.ModelProto:
    """Apply a :class:`~workbench.recipe.ConvertPrecision` or :class:`~workbench.recipe.Quantize` edit."""
    if isinstance(edit, ConvertPrecision):
        return convert_precision(model, edit.precision, keep=edit.keep, nodes=edit.nodes,
                                 keep_io_types=edit.keep_io_types, guard=edit.guard)
    if isinstance(edit, Quantize):
        if not edit.scales:
            raise RecipeError("the quantize edit names no scale cache ('scales' is empty)",
                              hint="calibrate first (workbench quantize --recipe-out, or the Calibrate tab)")
        if cache_dir is None:
            raise RecipeError(f"the quantize edit needs scale cache {edit.scales} but no cache folder was given",
                              hint="open the recipe with its cache folder (Session(..., cache_dir=...))")
        cache = ScaleCache.load(Path(cache_dir) / "scales" / f"{edit.scales}.json")
        if edit.method and edit.method != cache.method:  # the cache holds every method's threshold
            cache = cache.with_method(edit.method)
        if edit.methods:  # per-tensor choices over the edit's method
            cache = cache.with_methods(edit.methods)
        return quantize_model(model, cache, dtype=edit.dtype, exclude=edit.exclude, nodes=edit.nodes,
                              per_channel=edit.per_channel, target=edit.target,
                              float_heads=getattr(edit, "float_heads", True))
    raise TypeError(f"apply_precision_edit handles convert_precision and quantize, not {edit.kind}")
