"""Tensor types and shapes: the weightless skeleton, shape inference and :class:`TensorInfo` per tensor.

The checker and shape inference see a weightless skeleton of the graph (large initializers turned into typed
inputs, long attribute lists cut to their first element), so loading a 100 MB model costs little more than reading
it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import ModelError
from ._util import STRIPPABLE, copy_model, first_line, prod


@dataclass(frozen=True)
class TensorInfo:
    """Name, element type and shape of a tensor; a dim is an int, a symbol (str) or None."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON types: the shape as a list (None when unknown)."""
        return {"name": self.name, "dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}


_STRIP_BYTES = 1024


_VALUE_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")

# A list attribute longer than this is a table (a tree ensemble's 4.8 M node fields, a classifier's coefficients),
# which neither the checker (it checks attribute types) nor shape inference (it reads which attributes are set and
# the short ones: class labels, n_targets) reads element by element. The skeleton keeps its first element only:
# a LightGBM ensemble's 194 MB of attributes took 1.15 GB as a proto, and the skeleton, shape inference's
# serialised copy and its parsed result each held another copy (4.5 GB to load a 194 MB model).
_LIST_FIELDS = {onnx.AttributeProto.FLOATS: "floats", onnx.AttributeProto.INTS: "ints",
                onnx.AttributeProto.STRINGS: "strings"}
_TRIM_ELEMENTS = 4096


def _skeleton_node(node: onnx.NodeProto) -> onnx.NodeProto:
    """``node`` itself, or a copy whose long list attributes hold their first element only (see _TRIM_ELEMENTS).
    A Constant (its list is its value, whose length is its shape) and a node with subgraphs are never cut."""
    if node.op_type == "Constant" or not any(
            len(getattr(a, _LIST_FIELDS[a.type])) > _TRIM_ELEMENTS for a in node.attribute if a.type in _LIST_FIELDS):
        return node
    cut = onnx.NodeProto()
    cut.name, cut.op_type, cut.domain, cut.overload = node.name, node.op_type, node.domain, node.overload
    cut.input.extend(node.input)
    cut.output.extend(node.output)
    for a in node.attribute:
        field = _LIST_FIELDS.get(a.type)
        if field is None or len(getattr(a, field)) <= _TRIM_ELEMENTS:
            cut.attribute.append(a)
            continue
        short = cut.attribute.add()
        short.name, short.type = a.name, a.type
        getattr(short, field).append(getattr(a, field)[0])
    return cut


def weightless_skeleton(model: onnx.ModelProto, where: str = "the model") -> onnx.ModelProto:
    """The model with large floating/8-bit initializers turned into typed graph inputs (no weight bytes) and long
    attribute lists of its nodes cut to their first element (:func:`_skeleton_node`).

    Checker and shape inference see the same graph, names, types and shapes; the left-out tensors are
    validated here (type, dims, raw size) the way the checker would. Small tensors (shape data) stay in.
    Copy nodes back from an inferred skeleton only with :func:`copy_inferred_subgraphs` (a cut node must not
    replace the model's own).
    """
    g = model.graph
    skel = onnx.ModelProto()
    skel.ir_version = model.ir_version
    skel.opset_import.extend(model.opset_import)
    skel.metadata_props.extend(model.metadata_props)
    skel.functions.extend(model.functions)
    sg = skel.graph
    sg.name = g.name
    sg.node.extend(_skeleton_node(n) for n in g.node)
    sg.input.extend(g.input)
    sg.output.extend(g.output)
    sg.value_info.extend(g.value_info)
    sg.sparse_initializer.extend(g.sparse_initializer)
    inputs = {i.name for i in g.input}
    for t in g.initializer:
        itemsize = STRIPPABLE.get(t.data_type)
        if (itemsize is None or not t.HasField("raw_data") or t.data_location == TensorProto.EXTERNAL
                or any(len(getattr(t, f)) for f in _VALUE_FIELDS)):
            sg.initializer.append(t)
            continue
        if any(d < 0 for d in t.dims):
            raise ModelError(f"{where}: initializer '{t.name}' has a negative dimension {list(t.dims)}",
                             hint="the model file is damaged; export the model again")
        expected = prod(t.dims) * itemsize
        if expected < _STRIP_BYTES:
            sg.initializer.append(t)
            continue
        actual = len(t.raw_data)  # a short-lived copy, still cheaper than t.ByteSize() (which encodes)
        if actual != expected:
            raise ModelError(
                f"{where}: initializer '{t.name}' holds {actual} bytes but its shape {list(t.dims)} and type "
                f"{TensorProto.DataType.Name(t.data_type)} need {expected}",
                hint="the model file is damaged or truncated; export the model again",
            )
        if t.name not in inputs:
            sg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return skel


def infer_shapes(model: onnx.ModelProto, *, where: str = "the model") -> onnx.ModelProto:
    """A copy of ``model`` with ONNX shape inference applied (symbolic dims kept, data propagation on).

    Inference runs on a weightless skeleton and only value_info/outputs are copied back, so big models
    are never serialised whole (and models over 2 GB need no temp file).
    """
    out = copy_model(model)
    infer_into(out, where)
    return out


def _has_subgraphs(nodes: Iterable[onnx.NodeProto]) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in nodes for a in n.attribute)


# onnx's data propagation keeps ~200 bytes per element of every 1-D tensor it meets (a 25M-element vector
# took 11 GB), so it is switched off when the graph declares a long 1-D tensor. It matters for shape
# arithmetic (Shape -> Gather -> Concat -> Reshape), whose tensors are short.
_DATA_PROP_MAX_1D = 1 << 16


def _data_prop_safe(skel: onnx.ModelProto) -> bool:
    g = skel.graph
    for vi in (*g.input, *g.value_info, *g.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 1 and dims[0].dim_value > _DATA_PROP_MAX_1D:
            return False
    for t in g.initializer:
        if len(t.dims) == 1 and t.dims[0] > _DATA_PROP_MAX_1D:
            return False
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and len(a.t.dims) == 1 and a.t.dims[0] > _DATA_PROP_MAX_1D:
                return False
    return True


def infer_into(model: onnx.ModelProto, where: str, skel: onnx.ModelProto | None = None) -> None:
    """Infer shapes on ``skel`` (the model's weightless skeleton when None) and copy them into ``model``, in place."""
    skel = weightless_skeleton(model, where) if skel is None else skel
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, strict_mode=False, data_prop=_data_prop_safe(skel))
    except Exception as exc:
        raise ModelError(
            f"shape inference failed on {where}: {first_line(exc)}",
            hint="a node's inputs do not fit its operator; run onnx.checker with full_check=True for details",
        ) from exc
    g, ig = model.graph, inferred.graph
    del g.value_info[:]
    g.value_info.extend(ig.value_info)
    del g.output[:]
    g.output.extend(ig.output)
    copy_inferred_subgraphs(g, ig)


def copy_inferred_subgraphs(g: onnx.GraphProto, inferred: onnx.GraphProto) -> None:
    """Copy the nodes with If/Loop/Scan bodies (which inference annotates) from ``inferred``, the inferred
    weightless skeleton of ``g``, into ``g``; the other nodes stay ``g``'s own (the skeleton's may be cut)."""
    if not _has_subgraphs(g.node):
        return
    if len(g.node) != len(inferred.node):
        raise ValueError(f"the inferred graph has {len(inferred.node)} nodes, the graph {len(g.node)}")
    for node, done in zip(g.node, inferred.node):
        if _has_subgraphs((node,)):
            node.CopyFrom(done)


@functools.cache
def _dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        pass
    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"unknown({elem_type})"


def tensor_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    """The :class:`TensorInfo` a ValueInfoProto declares (dims as ints, symbols or None)."""
    t = vi.type.tensor_type
    dtype = _dtype_name(t.elem_type) if t.elem_type else "unknown"
    if not t.HasField("shape"):
        return TensorInfo(vi.name, dtype, None)
    dims: list[int | str | None] = []
    for d in t.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return TensorInfo(vi.name, dtype, tuple(dims))


def tensor_infos(model: onnx.ModelProto, names: set[str] | None = None) -> dict[str, TensorInfo]:
    """Every tensor with a known type in the main graph: inputs, outputs, value_info, initializers.

    ``names`` limits the result to those tensors (cheaper on big graphs).
    """
    g = model.graph
    out: dict[str, TensorInfo] = {}
    for vi in (*g.value_info, *g.input, *g.output):
        if names is None or vi.name in names:
            out[vi.name] = tensor_info(vi)
    for init in g.initializer:
        if names is None or init.name in names:
            out[init.name] = TensorInfo(init.name, _dtype_name(init.data_type), tuple(int(d) for d in init.dims))
    for node in g.node:
        if node.op_type == "Constant" and node.output and (names is None or node.output[0] in names):
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    out[node.output[0]] = TensorInfo(
                        node.output[0], _dtype_name(a.t.data_type), tuple(int(d) for d in a.t.dims)
                    )
    return out


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The main graph's real inputs (those that are not also initializers)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def skeleton_at(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], where: str) -> onnx.ModelProto:
    """The weightless skeleton with the given input shapes fixed and shapes inferred again."""
    skel = weightless_skeleton(model, where)
    real = [i.name for i in graph_inputs(model)]
    by_name = {i.name: i for i in skel.graph.input}
    for name, dims in shapes.items():
        if name not in real:
            raise ModelError(f"{where} has no input '{name}'", hint=f"the inputs are {real}")
        dims = [int(d) for d in dims]
        declared = tensor_info(by_name[name]).shape
        if declared is not None and len(declared) != len(dims):
            raise ModelError(f"{where}: input '{name}' has rank {len(declared)} ({list(declared)}), "
                             f"the shape given has {len(dims)} dims", hint=f"give {len(declared)} dims")
        for i, want in enumerate(dims):
            fixed = declared[i] if declared is not None else None
            if want < 1 or (isinstance(fixed, int) and fixed > 0 and fixed != want):
                raise ModelError(f"{where}: input '{name}' dim {i} cannot be {want} (declared {list(declared or [])})",
                                 hint="keep the model's fixed dims and use dims >= 1 for the dynamic ones")
        shape = by_name[name].type.tensor_type.shape
        del shape.dim[:]
        for want in dims:
            shape.dim.add().dim_value = want
    del skel.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, strict_mode=False, data_prop=_data_prop_safe(skel))
    except Exception as exc:
        raise ModelError(f"shape inference failed on {where} at shapes {dict(shapes)}: {first_line(exc)}",
                         hint="check the shapes against the model's inputs (workbench inspect)") from exc
    return inferred
