"""Load, validate, name, shape-infer and summarise ONNX models; save them atomically.

Everything a user can hand us (a path, bytes, a ModelProto or a sample name) goes through
:func:`load_model`, which raises only :class:`~workbench.errors.ModelError` for bad input.
Unnamed nodes get stable names (``{op}_{index}`` in graph order) so recipes can refer to them.
The checker and shape inference see a weightless skeleton of the graph (large initializers turned into
typed inputs), so loading a 100 MB model costs little more than reading it.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import mmap
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from .errors import ModelError
from .fsio import give_mode
from .table import Table

__all__ = [
    "SAMPLES_DIR",
    "TensorInfo",
    "load_model",
    "sample_path",
    "sample_names",
    "name_nodes",
    "infer_shapes",
    "weightless_skeleton",
    "prune_unused",
    "subgraphs",
    "iter_graphs",
    "all_nodes",
    "subgraph_reads",
    "rename_reads",
    "sort_nodes",
    "constant_weights",
    "constant_value_shape",
    "tensor_infos",
    "summary",
    "layer_table",
    "node_flops",
    "flops_at",
    "save_model",
    "model_bytes",
    "sha256_bytes",
    "sha256_file",
]

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "sample_models"
_PROTO_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class TensorInfo:
    """Name, element type and shape of a tensor; a dim is an int, a symbol (str) or None."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}


def sample_names() -> list[str]:
    """Names of the bundled sample models (``sample_models/*.onnx`` without the suffix)."""
    return sorted(p.stem for p in SAMPLES_DIR.glob("*.onnx"))


def sample_path(name: str) -> Path:
    """Path of a bundled sample model by name."""
    path = SAMPLES_DIR / f"{name}.onnx"
    if not path.is_file():
        raise ModelError(
            f"no sample model named '{name}' in {SAMPLES_DIR}",
            hint=f"use one of {sample_names()} or pass a path to an .onnx file",
        )
    return path


def load_model(
    source: str | os.PathLike[str] | bytes | onnx.ModelProto,
    *,
    check: bool = True,
    shapes: bool = True,
    names: bool = True,
) -> onnx.ModelProto:
    """Load a model from a path, bytes, a ModelProto or a sample name; validate it.

    External data is loaded from the model's folder and refused when it points outside it.
    Unnamed nodes are named (see :func:`name_nodes`) and shapes inferred, keeping symbolic dims.
    The caller's ModelProto is never modified: a copy is returned. Bad input raises :class:`ModelError`.
    The checker and shape inference run on a weightless skeleton of the graph, so their cost does not
    grow with the size of the weights.
    """
    if isinstance(source, onnx.ModelProto):
        model, where = _copy(source), "the given ModelProto"
        _refuse_unloaded_external_data(model, where)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        model, where = _parse(source, "the given bytes"), "the given bytes"
        _refuse_unloaded_external_data(model, where)
    elif isinstance(source, (str, os.PathLike)):
        path = _resolve(source)
        model, where = _load_file(path), str(path)
    else:
        raise ModelError(
            f"cannot load a model from a {type(source).__name__}",
            hint="pass a path to an .onnx file, a sample name, the file's bytes or an onnx.ModelProto",
        )
    _validate(model, where)
    sort_nodes(model.graph)  # valid ONNX lists nodes in topological order; some exporters do not (ORT accepts it)
    if names:
        name_nodes(model)
    skeleton = _checked_skeleton(model, where) if check else None
    if shapes:
        _infer_into(model, where, skeleton)
    return model


def _resolve(source: str | os.PathLike[str]) -> Path:
    """A path, or the bundled sample of that name when no such file exists."""
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "\x00" in text:
        raise ModelError(f"invalid model path {text!r} (it contains a NUL byte)", hint="pass a valid file path")
    path = Path(text)
    if not path.exists() and os.sep not in text and "/" not in text:
        stem = text[:-5] if text.endswith(".onnx") else text
        if (SAMPLES_DIR / f"{stem}.onnx").is_file():
            return sample_path(stem)
        if path.suffix == "":
            raise ModelError(f"{text}: no such file and no sample model of that name",
                             hint=f"pass the path to an .onnx file, or a sample: {', '.join(sample_names())}")
    return path


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _parse(data: bytes | bytearray | memoryview, where: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(
            f"{where} is not an ONNX model (protobuf could not parse it: {_first_line(exc)})",
            hint="check that the file is a complete .onnx export (not truncated, not a PyTorch .pt or a zip)",
        ) from exc
    if not model.HasField("graph"):
        raise ModelError(f"{where} is not an ONNX model (it has no graph)",
                         hint="check that the file is a complete .onnx export (not truncated, not another format)")
    return model


def _load_file(path: Path) -> onnx.ModelProto:
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not an ONNX file", hint="pass the .onnx file inside it")
    if not path.is_file():
        raise ModelError(f"model file not found: {path}", hint="check the path, or pass a sample name "
                         f"({', '.join(sample_names()) or 'none bundled'})")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ModelError(f"{path} is empty (0 bytes)", hint="export the model again; the file has no content")
            try:  # parse straight from the page cache: one copy of the weights instead of two
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # a file system without mmap: read it
                return _with_external_data(_parse(f.read(), str(path)), path)
            with mm:
                view = memoryview(mm)
                try:
                    model = _parse(view, str(path))
                finally:
                    view.release()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}", hint="check that the file exists and is readable") from exc
    return _with_external_data(model, path)


def _with_external_data(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    _load_external_data(model, path)
    return model


def _external_tensors(model: onnx.ModelProto) -> list[TensorProto]:
    """Tensors whose data lives in a side file: initializers and tensor attributes, subgraphs included."""
    found: list[TensorProto] = []
    _graph_external(model.graph, found)
    for f in model.functions:
        _nodes_external(f.node, found)
    return found


def _graph_external(g: onnx.GraphProto, found: list[TensorProto]) -> None:
    found += [t for t in g.initializer if t.data_location == TensorProto.EXTERNAL]
    for sparse in g.sparse_initializer:
        found += [t for t in (sparse.values, sparse.indices) if t.data_location == TensorProto.EXTERNAL]
    _nodes_external(g.node, found)


def _nodes_external(nodes: Any, found: list[TensorProto]) -> None:
    for n in nodes:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                if a.t.data_location == TensorProto.EXTERNAL:
                    found.append(a.t)
            elif a.type == onnx.AttributeProto.TENSORS:
                found += [t for t in a.tensors if t.data_location == TensorProto.EXTERNAL]
            elif a.type == onnx.AttributeProto.GRAPH:
                _graph_external(a.g, found)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _graph_external(sub, found)


def _refuse_unloaded_external_data(model: onnx.ModelProto, where: str) -> None:
    tensors = _external_tensors(model)
    if tensors:
        t = tensors[0]
        location = next((e.value for e in t.external_data if e.key == "location"), "?")
        raise ModelError(
            f"{where} refers to external data that is not loaded (tensor '{t.name}' lives in '{location}'"
            f"{f' and {len(tensors) - 1} more' if len(tensors) > 1 else ''})",
            hint="load the model from its .onnx path (its folder holds the data file), or call "
            "onnx.load_external_data_for_model(model, folder) first",
        )


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    tensors = _external_tensors(model)
    if not tensors:
        return
    base = path.resolve().parent
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        try:
            offset, length = int(info.get("offset") or 0), info.get("length")
            length = None if length in (None, "") else int(length)
        except ValueError as exc:
            raise ModelError(
                f"{path}: external data of tensor '{t.name}' has a non-numeric offset or length ({info})",
                hint="the model file is damaged; export the model again",
            ) from exc
        if not location or "\x00" in location or os.path.isabs(location):
            target = None
        else:
            target = (base / location).resolve()
        if target is None or not target.is_relative_to(base):
            raise ModelError(
                f"{path}: external data of tensor '{t.name}' points outside the model's folder ({location!r})",
                hint="external data must sit in the model's folder or below it; move the data file there "
                "and re-save the model with a relative location",
            )
        if not target.is_file():
            raise ModelError(
                f"{path}: external data file '{location}' of tensor '{t.name}' is missing",
                hint=f"copy '{location}' next to {path.name} (exporters save it beside the model)",
            )
        size = target.stat().st_size
        if offset < 0 or (length is not None and (length < 0 or offset + length > size)) or offset > size:
            raise ModelError(
                f"{path}: external data file '{location}' is too short for tensor '{t.name}' "
                f"(needs bytes {offset}..{offset + (length or 0)}, has {size})",
                hint="the data file is truncated or belongs to another export; export the model again",
            )
    from onnx.external_data_helper import load_external_data_for_model

    try:
        load_external_data_for_model(model, str(base))
    except Exception as exc:
        raise ModelError(f"{path}: cannot load external data: {_first_line(exc)}",
                         hint="the data file is damaged or belongs to another export; export the model again") from exc
    for t in tensors:  # onnx leaves data_location=DEFAULT set explicitly; clear it so the bytes (and the
        t.ClearField("data_location")  # digest) equal those of the same model stored in one file


def _validate(model: onnx.ModelProto, where: str) -> None:
    """Raise ModelError for a model we cannot use (opset, IR version, empty graph, damaged text)."""
    supported = onnx.defs.onnx_opset_version()
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and op.version > supported:
            raise ModelError(
                f"{where} uses ONNX opset {op.version}, newer than the installed onnx {onnx.__version__} "
                f"supports (up to {supported})",
                hint="upgrade onnx (pip install -U onnx) or export the model with a lower opset",
            )
    if model.ir_version > onnx.IR_VERSION:
        raise ModelError(
            f"{where} has ONNX IR version {model.ir_version}, newer than the installed onnx {onnx.__version__} "
            f"reads (up to {onnx.IR_VERSION})",
            hint="upgrade onnx (pip install -U onnx) or export the model with an older exporter",
        )
    if len(model.graph.node) == 0:
        raise ModelError(f"{where} has an empty graph (no nodes)", hint="export the model again; nothing to run")
    bad = _bad_text(model)
    if bad is not None:
        raise ModelError(f"{where} has a name or text field that is not valid UTF-8: {bad[:80]!r}",
                         hint="the file is damaged; export the model again")


def _checked_skeleton(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Run onnx.checker on the weightless skeleton (see :func:`weightless_skeleton`) and return it."""
    skeleton = weightless_skeleton(model, where)
    try:
        onnx.checker.check_model(skeleton.SerializeToString())
    except Exception as exc:
        raise ModelError(
            f"{where} is not a valid ONNX model: {_first_line(exc)}",
            hint="fix the exporter's output or load with check=False to inspect it anyway",
        ) from exc
    return skeleton


def _bad_text(model: onnx.ModelProto) -> str | None:
    """The first string field that is not valid UTF-8 (protobuf hands those back as bytes), else None."""
    texts: list[Any] = [model.producer_name, model.producer_version, model.domain, model.doc_string]
    texts += [op.domain for op in model.opset_import]
    for prop in model.metadata_props:
        texts += (prop.key, prop.value)
    for f in model.functions:
        texts += (f.name, f.domain)
        texts += f.input
        texts += f.output
        texts += f.attribute
        _node_texts(f.node, texts)
    _graph_texts(model.graph, texts)
    if bytes not in set(map(type, texts)):  # one pass in C; the loop below only runs for a damaged file
        return None
    return next(t for t in texts if isinstance(t, bytes)).decode("utf-8", "backslashreplace")


def _graph_texts(g: onnx.GraphProto, texts: list[Any]) -> None:
    texts += (g.name, g.doc_string)
    for vi in (*g.input, *g.output, *g.value_info):
        texts += (vi.name, vi.doc_string)
        t = vi.type.tensor_type
        if t.HasField("shape"):
            for d in t.shape.dim:
                texts += (d.dim_param, d.denotation)
    for t in g.initializer:
        texts += (t.name, t.doc_string)
        for e in t.external_data:
            texts += (e.key, e.value)
    _node_texts(g.node, texts)


def _node_texts(nodes: Any, texts: list[Any]) -> None:
    for n in nodes:
        texts += (n.name, n.op_type, n.domain, n.doc_string)
        texts += n.input
        texts += n.output
        for a in n.attribute:
            texts += (a.name, a.ref_attr_name, a.doc_string)
            if a.type == onnx.AttributeProto.GRAPH:
                _graph_texts(a.g, texts)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _graph_texts(sub, texts)
            elif a.type == onnx.AttributeProto.TENSOR:
                texts.append(a.t.name)


# Element sizes of the fixed-size types whose large initializers the skeleton leaves out.
_STRIPPABLE = {
    TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.DOUBLE: 8,
    TensorProto.INT8: 1, TensorProto.UINT8: 1,
    **{getattr(TensorProto, n): 1 for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
       if hasattr(TensorProto, n)},
}
_STRIP_BYTES = 1024
_VALUE_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def weightless_skeleton(model: onnx.ModelProto, where: str = "the model") -> onnx.ModelProto:
    """The model with large floating/8-bit initializers turned into typed graph inputs (no weight bytes).

    Checker and shape inference see the same graph, names, types and shapes; the left-out tensors are
    validated here (type, dims, raw size) the way the checker would. Small tensors (shape data) stay in.
    """
    g = model.graph
    skel = onnx.ModelProto()
    skel.ir_version = model.ir_version
    skel.opset_import.extend(model.opset_import)
    skel.metadata_props.extend(model.metadata_props)
    skel.functions.extend(model.functions)
    sg = skel.graph
    sg.name = g.name
    sg.node.extend(g.node)
    sg.input.extend(g.input)
    sg.output.extend(g.output)
    sg.value_info.extend(g.value_info)
    sg.sparse_initializer.extend(g.sparse_initializer)
    inputs = {i.name for i in g.input}
    for t in g.initializer:
        itemsize = _STRIPPABLE.get(t.data_type)
        if (itemsize is None or not t.HasField("raw_data") or t.data_location == TensorProto.EXTERNAL
                or any(len(getattr(t, f)) for f in _VALUE_FIELDS)):
            sg.initializer.append(t)
            continue
        if any(d < 0 for d in t.dims):
            raise ModelError(f"{where}: initializer '{t.name}' has a negative dimension {list(t.dims)}",
                             hint="the model file is damaged; export the model again")
        expected = _prod(t.dims) * itemsize
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def name_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed (or duplicately named) node a stable name ``{op}_{index}``; return how many.

    Nodes inside If/Loop/Scan bodies get ``{parent}/{attribute}/{op}_{index}`` the same way.
    """
    return _name_graph(model.graph, "")


def _name_graph(graph: onnx.GraphProto, prefix: str) -> int:
    used = Counter(n.name for n in graph.node if n.name)
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(graph.node):
        if node.name and (used[node.name] == 1 or node.name not in seen):
            seen.add(node.name)
        else:
            base = node.name or f"{prefix}{node.op_type}_{i}"
            name, k = base, 1
            while name in seen or (name != node.name and used.get(name)):
                name, k = f"{base}_{k}", k + 1
            node.name = name
            seen.add(name)
            renamed += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                renamed += _name_graph(attr.g, f"{node.name}/{attr.name}/")
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for j, sub in enumerate(attr.graphs):
                    renamed += _name_graph(sub, f"{node.name}/{attr.name}{j}/")
    return renamed


def infer_shapes(model: onnx.ModelProto, *, where: str = "the model") -> onnx.ModelProto:
    """A copy of ``model`` with ONNX shape inference applied (symbolic dims kept, data propagation on).

    Inference runs on a weightless skeleton and only value_info/outputs are copied back, so big models
    are never serialised whole (and models over 2 GB need no temp file).
    """
    out = _copy(model)
    _infer_into(out, where)
    return out


def _has_subgraphs(nodes: Any) -> bool:
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


def _infer_into(model: onnx.ModelProto, where: str, skel: onnx.ModelProto | None = None) -> None:
    skel = weightless_skeleton(model, where) if skel is None else skel
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, strict_mode=False, data_prop=_data_prop_safe(skel))
    except Exception as exc:
        raise ModelError(
            f"shape inference failed on {where}: {_first_line(exc)}",
            hint="a node's inputs do not fit its operator; run onnx.checker with full_check=True for details",
        ) from exc
    g, ig = model.graph, inferred.graph
    del g.value_info[:]
    g.value_info.extend(ig.value_info)
    del g.output[:]
    g.output.extend(ig.output)
    if _has_subgraphs(g.node):  # inference also annotates If/Loop/Scan bodies
        del g.node[:]
        g.node.extend(ig.node)


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


def _value_info(vi: onnx.ValueInfoProto) -> TensorInfo:
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
            out[vi.name] = _value_info(vi)
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


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _known(shape: tuple | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            try:
                return helper.get_attribute_value(a)
            except Exception:  # a malformed attribute: treat as absent
                return default
    return default


def node_flops(node: onnx.NodeProto, infos: dict[str, TensorInfo]) -> int | None:
    """Multiply-accumulate FLOPs (2 per MAC) of Conv, ConvTranspose, Gemm and MatMul; None when unknown."""
    op = node.op_type
    if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return None

    def shape(i: int, outputs: bool = False) -> tuple | None:
        names = node.output if outputs else node.input
        info = infos.get(names[i]) if i < len(names) else None
        return info.shape if info is not None and _known(info.shape) else None

    if op == "Conv":
        w, y = shape(1), shape(0, outputs=True)
        if w is None or y is None or len(w) < 3 or len(y) != len(w):
            return None
        # y: N, Cout, *spatial; w: Cout, Cin/group, *kernel
        return 2 * _prod(y) * _prod(w[1:])
    if op == "ConvTranspose":
        x, w = shape(0), shape(1)
        if x is None or w is None or len(w) < 3 or len(x) != len(w):
            return None
        # every input element is multiplied by Cout/group * kernel weights
        return 2 * _prod(x) * _prod(w[1:])
    a, b = shape(0), shape(1)
    if a is None or b is None:
        return None
    if op == "Gemm":
        if len(a) != 2 or len(b) != 2:
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return 2 * m * n * k
    y = shape(0, outputs=True)
    if y is None or len(a) < 1:
        return None
    return 2 * _prod(y) * int(a[-1])  # every output element sums K = a's last dim products


def _prod(dims: tuple) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


_FLOP_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _total_flops(model: onnx.ModelProto) -> int | None:
    nodes = [n for n in model.graph.node if n.op_type in _FLOP_OPS]
    infos = tensor_infos(model, {t for n in nodes for t in (*n.input, *n.output)})
    flops = [node_flops(n, infos) for n in nodes]
    return None if not flops or any(f is None for f in flops) else int(sum(flops))


def flops_at(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], *, where: str = "the model") -> int | None:
    """Total FLOPs of Conv/ConvTranspose/Gemm/MatMul with the given inputs fixed to concrete shapes.

    Shape inference is re-run on a weightless skeleton (the model is not copied or changed). Inputs not in
    ``shapes`` keep their declared shapes; None when some shape stays unknown.
    """
    return _total_flops(_skeleton_at(model, shapes, where))


def _skeleton_at(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], where: str) -> onnx.ModelProto:
    """The weightless skeleton with the given input shapes fixed and shapes inferred again."""
    skel = weightless_skeleton(model, where)
    real = [i.name for i in _graph_inputs(model)]
    by_name = {i.name: i for i in skel.graph.input}
    for name, dims in shapes.items():
        if name not in real:
            raise ModelError(f"{where} has no input '{name}'", hint=f"the inputs are {real}")
        dims = [int(d) for d in dims]
        declared = _value_info(by_name[name]).shape
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
        raise ModelError(f"shape inference failed on {where} at shapes {dict(shapes)}: {_first_line(exc)}",
                         hint="check the shapes against the model's inputs (workbench inspect)") from exc
    return inferred


def summary(model: onnx.ModelProto, *, shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """The contract summary: inputs, outputs, nodes, ops, params, opset, flops (None when unknown).

    With ``shapes`` ({input: dims}), ``flops`` is computed at those input shapes (see :func:`flops_at`) and
    ``flops_shapes`` records them; inputs and outputs still show the declared shapes. When ``flops`` is unknown
    only because the leading (batch) dim of the inputs is dynamic, ``flops_per_sample`` gives it at batch 1.
    """
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    out = {
        "inputs": [_value_info(i).to_dict() for i in _graph_inputs(model)],
        "outputs": [_value_info(o).to_dict() for o in g.output],
        "nodes": len(g.node),
        "ops": dict(sorted(Counter(n.op_type for n in g.node).items())),
        "params": _param_count(model),
        "opset": opset,
        "flops": _total_flops(model) if not shapes else flops_at(model, shapes),
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
    if shapes:
        out["flops_shapes"] = {name: [int(d) for d in dims] for name, dims in shapes.items()}
    out["flops_per_sample"] = _flops_per_sample(model, out) if out["flops"] is None and not shapes else None
    return out


def _flops_per_sample(model: onnx.ModelProto, info: dict[str, Any]) -> int | None:
    """FLOPs at batch 1 when every input is static but for its leading dim; else None."""
    batch1: dict[str, list[int]] = {}
    for t in info["inputs"]:
        dims = t["shape"]
        if not dims or any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
            return None
        batch1[t["name"]] = [1, *dims[1:]]
    if all(isinstance(t["shape"][0], int) and t["shape"][0] > 0 for t in info["inputs"]):
        return None
    return flops_at(model, batch1)


LAYER_COLUMNS = ("name", "op", "inputs", "outputs", "input_shapes", "output_shapes", "dtype", "params", "flops",
                 "weights")


def layer_table(model: onnx.ModelProto, *, shapes: Mapping[str, Sequence[int]] | None = None,
                constant_rows: bool = False) -> Table:
    """One row per node in graph order: name, op, inputs, outputs, shapes, output dtype, params, flops, weights.

    ``weights`` lists the constant tensors a node reads (initializers and Constant-node outputs) as
    ``"name: 3x3x3x8"``; ``params`` counts the elements of those that are weights (initializers, non-scalar
    float or 8-bit Constant tensors; not int64 shape constants) plus an ai.onnx.ml node's float attributes. Constant nodes whose tensors all feed other nodes
    get no row of their own (they appear in their readers' weights, as Netron draws them) unless
    ``constant_rows``. With ``shapes`` ({input: dims}) the shapes and FLOPs are those at these input shapes.
    """
    infos = tensor_infos(_skeleton_at(model, shapes, "the model") if shapes else model)
    g = model.graph
    weights = {t.name: tuple(int(d) for d in t.dims) for t in g.initializer}
    params = {t: _prod(d) for t, d in weights.items()}
    consts: dict[str, tuple[int, ...]] = {}
    for n in g.node:
        shape = constant_value_shape(n)
        if shape is not None and n.output and n.output[0]:
            consts[n.output[0]] = shape
            params[n.output[0]] = _constant_params(n)
    weights.update(consts)
    graph_outputs = {o.name for o in g.output}

    def shp(name: str) -> str:
        info = infos.get(name)
        if info is None or info.shape is None:
            return "?"
        return "x".join(str(d) if d is not None else "?" for d in info.shape) or "scalar"

    rows = []
    for node in g.node:
        if not constant_rows and node.output and node.output[0] in consts and node.output[0] not in graph_outputs:
            continue
        reads = [i for i in node.input if i]
        read_weights = [t for t in dict.fromkeys(reads) if t in weights]
        read_weights += sorted(t for t in subgraph_reads(node) - set(reads) if t in consts)
        out = infos.get(node.output[0]) if node.output else None
        rows.append(
            (
                node.name,
                node.op_type,
                reads,
                list(node.output),
                [shp(i) for i in reads if i not in weights],
                [shp(o) for o in node.output],
                out.dtype if out else "?",
                sum(params[t] for t in read_weights) + _attribute_params(node),
                node_flops(node, infos),
                [f"{t}: {'x'.join(map(str, weights[t])) or 'scalar'}" for t in read_weights],
            )
        )
    return Table(LAYER_COLUMNS, tuple(rows))


def model_bytes(model: onnx.ModelProto) -> bytes:
    """Deterministic serialisation (used for digests and byte-identical replay)."""
    return model.SerializeToString(deterministic=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_model(model: onnx.ModelProto, path: Path, big: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_data: Path | None = None
    try:
        if big:
            data_name = f"{path.name}.data"
            fd, name = tempfile.mkstemp(prefix=f".{data_name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp_data = Path(name)
            _write_synced(tmp, _with_weights_outside(model, tmp_data, data_name))
            give_mode(tmp_data, path.parent / data_name)
            os.replace(tmp_data, path.parent / data_name)
        else:
            _write_synced(tmp, model_bytes(model))
        give_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if tmp_data is not None:
            tmp_data.unlink(missing_ok=True)
        raise


def _copy_fields(src: Any, dst: Any, skip: str) -> None:
    """Copy every set field of a message except ``skip`` (generic, so new ONNX fields are not lost)."""
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _with_weights_outside(model: onnx.ModelProto, data_path: Path, data_name: str) -> bytes:
    """Stream the graph's large initializers into ``data_path``; the serialised model pointing at ``data_name``.

    The model is never copied whole (one tensor's bytes at a time), so models over 2 GB can be saved.
    """
    out = onnx.ModelProto()
    _copy_fields(model, out, skip="graph")
    _copy_fields(model.graph, out.graph, skip="initializer")
    offset = 0
    with open(data_path, "wb") as f:
        for t in model.graph.initializer:
            if not t.HasField("raw_data") or t.data_location == TensorProto.EXTERNAL:
                out.graph.initializer.append(t)
                continue
            raw = t.raw_data
            if len(raw) < 1024:
                out.graph.initializer.append(t)
                continue
            pad = -offset % 4096  # page-aligned, as onnx's own writer does, so runtimes can mmap it
            f.write(b"\0" * pad)
            offset += pad
            f.write(raw)
            stub = out.graph.initializer.add()
            _copy_fields(t, stub, skip="raw_data")
            stub.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = stub.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            del raw
        f.flush()
        os.fsync(f.fileno())
    return out.SerializeToString(deterministic=True)


def _serialised_size(model: onnx.ModelProto) -> int:
    """About the serialised size, without serialising the weights (ByteSize() fails past 2 GB)."""
    size = 0
    for t in model.graph.initializer:
        itemsize = _STRIPPABLE.get(t.data_type)
        if itemsize is not None and t.HasField("raw_data"):
            size += _prod(t.dims) * itemsize + 64 + len(t.name)
        else:
            size += t.ByteSize()
    return size + sum(n.ByteSize() for n in model.graph.node) + 1024


def _write_synced(path: str | Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    protect: str | os.PathLike[str] | None = None,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` atomically (temp file + rename); refuse to overwrite ``protect`` (the source model).

    Models over 2 GB (or with ``external_data=True``) are saved with their large initializers in
    ``<name>.data`` beside it (written first, also atomically), streamed one tensor at a time.
    """
    path = Path(path)
    if protect is not None and path.resolve() == Path(protect).resolve():
        raise ModelError(
            f"refusing to overwrite the source model {path}",
            hint="choose another output path (the workbench never overwrites the user's model)",
        )
    big = _serialised_size(model) > _PROTO_LIMIT if external_data is None else external_data
    try:
        _write_model(model, path, big)
    except OSError as exc:
        raise ModelError(f"cannot write the model to {path}: {exc.strerror or exc}",
                         hint="choose a writable folder with enough free space") from exc
    return path


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of ``node`` (If branches, Loop/Scan bodies), in attribute order; [] for ordinary nodes."""
    out: list[onnx.GraphProto] = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph nested in it (If/Loop/Scan bodies at any depth), depth first."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from iter_graphs(sub)


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs, depth first (a node before its bodies' nodes)."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from all_nodes(sub)


def subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names read by the bodies of ``node``'s subgraphs (If/Loop/Scan), outer-scope tensors included."""
    names: set[str] = set()
    for g in subgraphs(node):
        for n in g.node:
            names.update(i for i in n.input if i)
            names |= subgraph_reads(n)
        names.update(o.name for o in g.output)  # a body may return an outer-scope tensor as is
    return names


_subgraph_reads = subgraph_reads  # the name prune_unused used


def rename_reads(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> int:
    """Make every reader of tensor ``old`` read ``mapping[old]``, in place: node inputs of ``graph`` and of every
    If/Loop/Scan body (outer-scope references), and body outputs that pass an outer tensor through. Producers
    and graph outputs are left alone. Returns how many references changed."""
    if not mapping:
        return 0
    changed = 0
    for g in iter_graphs(graph):
        for n in g.node:
            for k, t in enumerate(n.input):
                if t in mapping:
                    n.input[k] = mapping[t]
                    changed += 1
        if g is not graph:
            made = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {i.name for i in g.initializer}
            for o in g.output:
                if o.name in mapping and o.name not in made:
                    o.name = mapping[o.name]
                    changed += 1
    return changed


def _node_reads(node: onnx.NodeProto) -> set[str]:
    return {i for i in node.input if i} | subgraph_reads(node)


def sort_nodes(graph: onnx.GraphProto) -> bool:
    """Put the nodes of ``graph`` and of every subgraph in topological order, in place; True when any moved.

    A node's dependencies are its inputs and the outer-scope tensors its bodies read. Nodes already in order
    keep it (a stable sort: among ready nodes the earliest first). A cycle leaves that graph as it was (the
    checker then names it).
    """
    moved = False
    for g in iter_graphs(graph):
        moved |= _sort_one(g)
    return moved


def _sort_one(graph: onnx.GraphProto) -> bool:
    nodes = list(graph.node)
    producer: dict[str, int] = {}
    for k, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer.setdefault(o, k)
    deps = [{producer[t] for t in _node_reads(n) if t in producer and producer[t] != k} for k, n in enumerate(nodes)]
    if all(all(d < k for d in ds) for k, ds in enumerate(deps)):
        return False
    users: list[list[int]] = [[] for _ in nodes]
    waiting = [len(ds) for ds in deps]
    for k, ds in enumerate(deps):
        for d in ds:
            users[d].append(k)
    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for u in users[k]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):  # a cycle: not ours to fix
        return False
    copies = [onnx.NodeProto.FromString(nodes[k].SerializeToString()) for k in order]
    del graph.node[:]
    graph.node.extend(copies)
    return True


def constant_value_shape(node: onnx.NodeProto) -> tuple[int, ...] | None:
    """Shape of the tensor a Constant node makes (any of its value attributes); None for other nodes."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return tuple(int(d) for d in a.t.dims)
        if a.name == "sparse_value":
            return tuple(int(d) for d in a.sparse_tensor.dims)
        if a.name in ("value_floats", "value_ints", "value_strings"):
            return (len(a.floats or a.ints or a.strings),)
        if a.name in ("value_float", "value_int", "value_string"):
            return ()
    return None


# Element types of Constant-node tensors that count as weights (parameters); int64/int32/bool constants are
# shape arithmetic, and scalars are op arguments (an epsilon, a Gelu's 0.5), not learned values.
_WEIGHT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
                 TensorProto.INT8, TensorProto.UINT8, *(getattr(TensorProto, n) for n in (
                     "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ") if hasattr(TensorProto, n))}


def _constant_params(node: onnx.NodeProto) -> int:
    """Elements of a Constant node's tensor when it is a weight (a non-scalar float or 8-bit tensor), else 0."""
    shape = constant_value_shape(node)
    if shape is None or _prod(shape) < 2:
        return 0
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return _prod(shape) if a.t.data_type in _WEIGHT_TYPES else 0
        if a.name == "sparse_value":
            return _prod(shape) if a.sparse_tensor.values.data_type in _WEIGHT_TYPES else 0
        if a.name == "value_floats":
            return _prod(shape)
    return 0


_ML_DOMAIN = "ai.onnx.ml"
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def _attribute_params(node: onnx.NodeProto) -> int:
    """Parameters an ai.onnx.ml node carries as attributes: the elements of its float lists and float tensors
    (LinearClassifier/Regressor coefficients and intercepts, Scaler offset/scale, SVM coefficients and
    support vectors, TreeEnsemble thresholds and leaf weights); 0 for every other domain's node."""
    if node.domain != _ML_DOMAIN:
        return 0
    total = 0
    for a in node.attribute:
        if a.type == onnx.AttributeProto.FLOATS:
            total += len(a.floats)
        elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type in _FLOAT_TYPES:
            total += _prod(a.t.dims)
    return total


def constant_weights(model: onnx.ModelProto, *, initializers: bool = False) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """``{node: [(tensor, shape)]}``: the Constant-node tensors each main-graph node reads (as Netron draws a
    weight inside the node that uses it); with ``initializers`` also the initializers it reads.

    A tensor that subgraphs of a node read counts for that node (an If reading an outer Constant). Constant
    nodes themselves are not keys. PaddlePaddle and TensorFlow exports keep their weights this way.
    """
    g = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for n in g.node:
        shape = constant_value_shape(n)
        if shape is not None and n.output and n.output[0]:
            shapes[n.output[0]] = shape
    if initializers:
        for t in g.initializer:
            shapes.setdefault(t.name, tuple(int(d) for d in t.dims))
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for n in g.node:
        if n.op_type == "Constant":
            continue
        reads = [i for i in n.input if i] + sorted(subgraph_reads(n) - set(n.input))
        found = [(t, shapes[t]) for t in dict.fromkeys(reads) if t in shapes]
        if found:
            out[n.name] = found
    return out


def _param_count(model: onnx.ModelProto) -> int:
    """Elements of every initializer, Constant-node weight and ai.onnx.ml attribute parameter (coefficients,
    intercepts, tree values: :func:`_attribute_params`), in the main graph and every subgraph."""
    total = 0
    for g in iter_graphs(model.graph):
        total += sum(_prod(t.dims) for t in g.initializer)
        total += sum(map(_constant_params, g.node))
        total += sum(map(_attribute_params, g.node))
    return total


def prune_unused(graph: onnx.GraphProto, *, keep: set[str] | None = None, inputs: bool = False) -> None:
    """Drop, in place, the nodes no kept output depends on, then unused initializers (and, with ``inputs``,
    unused graph inputs). ``keep`` defaults to the graph outputs; other outputs are removed. One backward
    pass over the topologically ordered nodes; tensors read inside subgraphs count as used."""
    if keep is not None:
        for o in [o for o in graph.output if o.name not in keep]:
            graph.output.remove(o)
    needed = {o.name for o in graph.output} if keep is None else set(keep)
    alive = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            alive.append(node)
            needed.update(i for i in node.input if i)
            needed |= _subgraph_reads(node)
    if len(alive) != len(graph.node):
        kept = [onnx.NodeProto.FromString(n.SerializeToString()) for n in reversed(alive)]
        del graph.node[:]
        graph.node.extend(kept)
    for init in [i for i in graph.initializer if i.name not in needed]:
        graph.initializer.remove(init)
    if inputs:
        for i in [i for i in graph.input if i.name not in needed]:
            graph.input.remove(i)
