"""ONNX models: load, validate, name, shape-infer, walk, summarise and save them atomically.

Everything a user can hand us (a path, bytes, a ModelProto or a sample name) goes through
:func:`load_model`, which raises only :class:`~workbench.errors.ModelError` for bad input.
Unnamed nodes get stable names (``{op}_{index}`` in graph order) so recipes can refer to them.
The checker and shape inference see a weightless skeleton of the graph (large initializers turned into
typed inputs), so loading a 100 MB model costs little more than reading it.

The modules, by concept: :mod:`.load` (reading and validating), :mod:`.save` (atomic writes, digests),
:mod:`.shapes` (skeleton, shape inference, tensor types), :mod:`.names` (stable node names), :mod:`.walk`
(subgraphs, reads, topological order, pruning), :mod:`.weights` (params), :mod:`.flops`, :mod:`.summary` and
:mod:`.layers` (the layer table).
"""

from __future__ import annotations

from .flops import flops_at, node_flops
from .layers import LAYER_COLUMNS, layer_table
from .load import SAMPLES_DIR, load_model, sample_names, sample_path
from .names import name_nodes
from .save import model_bytes, save_model, sha256_bytes, sha256_file
from .shapes import TensorInfo, copy_inferred_subgraphs, infer_shapes, tensor_infos, weightless_skeleton
from .summary import ModelSummary, summary
from .walk import all_nodes, iter_graphs, prune_unused, rename_reads, sort_nodes, subgraph_reads, subgraphs
from .weights import constant_weights

__all__ = [
    "LAYER_COLUMNS",
    "SAMPLES_DIR",
    "TensorInfo",
    "load_model",
    "sample_path",
    "sample_names",
    "name_nodes",
    "infer_shapes",
    "weightless_skeleton",
    "copy_inferred_subgraphs",
    "prune_unused",
    "subgraphs",
    "iter_graphs",
    "all_nodes",
    "subgraph_reads",
    "rename_reads",
    "sort_nodes",
    "constant_weights",
    "tensor_infos",
    "ModelSummary",
    "summary",
    "layer_table",
    "node_flops",
    "flops_at",
    "save_model",
    "model_bytes",
    "sha256_bytes",
    "sha256_file",
]
