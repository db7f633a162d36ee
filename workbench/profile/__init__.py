r"""Per-layer timing tables with one schema for every source, and TensorRT layer information.

Every source gives a :class:`~workbench.table.Table` with the columns ``TIMING_COLUMNS``:
``name`` (backend layer), ``onnx_nodes`` (the ONNX nodes it covers), ``type``, ``precision``,
``median_ms``, ``mean_ms``, ``pct`` (share of the summed median time). Sources:

- ONNX Runtime on the CPU: :func:`workbench.backends.ort_profile.profile_model` / ``OrtEngine.profile``.
- trtexec files: ``--exportLayerInfo`` (IEngineInspector JSON) and ``--exportProfile``: :func:`from_trtexec`.
  Both generations of the inspector JSON are read: TensorRT <= 10 (``Bindings``, ``Format/Datatype``) and
  TensorRT 11 (structured ``I/O Tensors``, separate ``Format`` and ``DataType``); the ``Metadata`` field
  (``[ONNX Layer: a]\x1f[ONNX Layer: b]``) names the ONNX nodes when present.
- TensorRT's IProfiler on a GPU: :func:`from_layer_times` aggregates ``report_layer_time`` samples.

Fused layer names are mapped back to ONNX nodes by :func:`onnx_nodes_of`; reformat layers TensorRT
inserts ("Reformatting CopyNode for Input Tensor 0 to X") are charged to the ONNX nodes of the layer X
they serve (their ``type`` stays TensorRT's). :func:`compare_profiles` matches layers of several
engines by ONNX node.

Modules: :mod:`.layer_info` (engine layer JSON, layer -> ONNX nodes), :mod:`.trtexec` (trtexec profile JSON,
IProfiler samples), :mod:`.tables` (totals and groups of one table), :mod:`.compare` (several tables),
:mod:`.store` (tables on disk).
"""

from __future__ import annotations

from ..backends.ort_profile import TIMING_COLUMNS, timing_table
from .compare import compare_profiles, profile_summary
from .layer_info import (
    EngineInfo,
    EngineLayer,
    EngineTensor,
    is_reformat,
    layer_details,
    metadata_nodes,
    onnx_nodes_of,
    precision_of_format,
    read_layer_info,
)
from .store import load_timings, save_timings
from .tables import group_times, layer_op, node_times, op_type_of, precision_counts, total_ms
from .trtexec import from_layer_times, from_trtexec, read_profile_json

__all__ = [
    "TIMING_COLUMNS",
    "EngineTensor",
    "EngineLayer",
    "EngineInfo",
    "read_layer_info",
    "read_profile_json",
    "from_trtexec",
    "from_layer_times",
    "layer_details",
    "metadata_nodes",
    "onnx_nodes_of",
    "precision_of_format",
    "timing_table",
    "total_ms",
    "node_times",
    "op_type_of",
    "group_times",
    "precision_counts",
    "compare_profiles",
    "profile_summary",
    "is_reformat",
    "layer_op",
    "save_timings",
    "load_timings",
]
