"""The model graph as compact JSON for the graph widget (pure data: no widget or plotting library).

:func:`graph_json` turns an ``onnx.ModelProto`` into what the front end draws: one entry per node (op, name,
short key attributes, name-scope path, folded weights), graph inputs/outputs as ``in:``/``out:`` nodes, and
edges labelled with their tensor's shape and dtype. Initializers and the outputs of ``Constant`` nodes are
*folded* into the nodes that read them (listed on the node, not drawn), and the ``Constant`` nodes themselves
are left out, so a PaddlePaddle-style model whose every weight is a ``Constant`` draws only its compute nodes.

:func:`overlay` turns a ``{node: number | str}`` mapping into per-node colours and a legend (a continuous
scale for numbers, one stable colour per value otherwise); :func:`op_color` gives an op type the same colour
in every model and after every edit (a hash of its name, not its rank among the ops present).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import onnx
from onnx import helper

from ..graph import tensor_infos
from ..profile import EngineInfo

__all__ = [
    "graph_json", "engine_graph_json", "engine_graph", "overlay", "op_color", "scope_of", "short_dtype", "shape_text",
    "key_attributes", "folded_inputs", "PALETTE", "MISSING",
]

# fixed colours for the common ops (light enough for black text); any other op gets a hue from a hash of its name
PALETTE = {
    "Conv": "#aec7e8", "ConvTranspose": "#6baed6", "Gemm": "#c5b0d5", "MatMul": "#9e9ac8", "Relu": "#ffbb78",
    "Clip": "#fdd0a2", "Sigmoid": "#fdae6b", "HardSigmoid": "#fdae6b", "Mul": "#98df8a", "Add": "#c7e9c0",
    "Sub": "#b3de69", "Div": "#74c476", "Concat": "#ff9896", "Reshape": "#e0e0e0", "Transpose": "#dbdb8d",
    "Flatten": "#d9d9d9", "Squeeze": "#d9d9d9", "Unsqueeze": "#d9d9d9", "MaxPool": "#9edae5",
    "AveragePool": "#80b1d3", "GlobalAveragePool": "#80b1d3", "BatchNormalization": "#f7b6d2",
    "Softmax": "#fb8072", "Resize": "#bebada", "Slice": "#fccde5", "Gather": "#ccebc5", "Split": "#ffed6f",
    "QuantizeLinear": "#fcbba1", "DequantizeLinear": "#fc9272", "Cast": "#c49c94", "Shape": "#e7e7e7",
    "LayerNormalization": "#f4a6c6", "Erf": "#ffd8a8", "Pow": "#d0f0c0", "Sqrt": "#d0f0c0",
    "ReduceMean": "#b0d8e8", "Tanh": "#ffc08a", "Pad": "#e5d8bd", "Identity": "#f0f0f0",
    "Input": "#525252", "Output": "#525252",
    # precisions (the precision overlay)
    "fp32": "#6baed6", "fp16": "#74c476", "bf16": "#17becf", "int8": "#fb6a4a", "fp8": "#fd8d3c",
    "int4": "#9e9ac8", "fp4": "#c49c94",
}
MISSING = "#eeeeee"  # a node without an overlay value
# a perceptual scale (viridis, 9 stops) for numeric overlays, low to high
_SCALE = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")

_DTYPES = {
    "float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64", "int8": "i8", "uint8": "u8",
    "int16": "i16", "uint16": "u16", "int32": "i32", "uint32": "u32", "int64": "i64", "uint64": "u64",
    "bool": "bool", "float8e4m3fn": "fp8e4m3", "float8e5m2": "fp8e5m2", "int4": "i4", "uint4": "u4",
    "float4e2m1": "fp4",
}

# attributes worth a place on the node box, in this order, with their short label
_KEY_ATTRS = (
    ("kernel_shape", "k"), ("strides", "s"), ("pads", "p"), ("dilations", "d"), ("group", "g"), ("axis", "axis"),
    ("axes", "axes"), ("perm", "perm"), ("mode", "mode"), ("alpha", "α"), ("beta", "β"), ("epsilon", "ε"),
    ("transA", "tA"), ("transB", "tB"), ("to", "to"), ("keepdims", "keep"), ("direction", "dir"),
    ("output_padding", "op"), ("auto_pad", "auto"), ("block_size", "bs"), ("saturate", "sat"),
)


def op_color(op: str) -> str:
    """The colour of an op type (or of any category value): fixed for common ops and precisions
    (:data:`PALETTE`), else a light hue from a hash of the name; the same in every model and after every edit."""
    fixed = PALETTE.get(op)
    if fixed is not None:
        return fixed
    h = int.from_bytes(hashlib.blake2s(op.encode("utf-8"), digest_size=4).digest(), "big")
    hue, light = h % 360, 72 + (h >> 9) % 12
    return _hsl_hex(hue, 0.55, light / 100)


def _hsl_hex(h: float, s: float, l: float) -> str:  # noqa: E741 - the usual names
    c = (1 - abs(2 * l - 1)) * s
    x = c * (1 - abs((h / 60) % 2 - 1))
    m = l - c / 2
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h // 60) % 6]
    return "#" + "".join(f"{round((v + m) * 255):02x}" for v in (r, g, b))


def short_dtype(dtype: str | None) -> str:
    """``float32`` -> ``f32`` (unknown names pass through)."""
    return "?" if dtype is None else _DTYPES.get(dtype, dtype)


def shape_text(shape: Iterable[Any] | None) -> str:
    """``(1, 3, 224, 224)`` -> ``1x3x224x224``; a dynamic dim shows its symbol or ``?``; scalars are ``[]``."""
    if shape is None:
        return "?"
    dims = ["?" if d is None else str(d) for d in shape]
    return "x".join(dims) if dims else "[]"


def scope_of(name: str) -> str:
    """The name-scope path of a node name: ``/backbone/layer1/conv/Conv`` -> ``backbone/layer1/conv`` (no scope: "")."""
    parts = [p for p in name.split("/") if p]
    return "/".join(parts[:-1]) if "/" in name else ""


def _value_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(isinstance(v, int) for v in value):
            return "x".join(str(v) for v in value) if len(value) <= 8 else f"[{len(value)} ints]"
        return ",".join(_value_text(v) for v in value[:6]) + (",…" if len(value) > 6 else "")
    return str(value)


def _is_default(name: str, value: Any) -> bool:
    """Attributes at their no-op value say nothing on a box (strides/dilations of 1, zero pads, group 1)."""
    if name in ("strides", "dilations") and isinstance(value, list):
        return all(v == 1 for v in value)
    if name == "pads" and isinstance(value, list):
        return all(v == 0 for v in value)
    return name == "group" and value == 1


def key_attributes(node: onnx.NodeProto, limit: int = 4) -> list[list[str]]:
    """Up to ``limit`` short ``[label, value]`` pairs of the attributes that matter most on a node box
    (``k 3x3``, ``s 2x2``, ``p 1x1x1x1``, ``g 32``, ``perm 0x2x1``, ...)."""
    attrs = {a.name: a for a in node.attribute}
    out: list[list[str]] = []
    for name, label in _KEY_ATTRS:
        a = attrs.get(name)
        if a is None or a.type in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.GRAPH,
                                   onnx.AttributeProto.GRAPHS, onnx.AttributeProto.SPARSE_TENSOR):
            continue
        value = helper.get_attribute_value(a) if a.type != onnx.AttributeProto.TENSOR else None
        if _is_default(name, value):
            continue
        if name == "to":
            text = short_dtype(onnx.helper.tensor_dtype_to_np_dtype(a.i).name) if a.i else "?"
        else:
            text = _value_text(value)
        out.append([label, text[:24]])
        if len(out) >= limit:
            break
    return out


def _constants(model: onnx.ModelProto) -> tuple[set[str], set[str]]:
    """(tensors that are constant weights: initializers and Constant outputs, names of the Constant nodes)."""
    g = model.graph
    weights = {i.name for i in g.initializer}
    const_nodes: set[str] = set()
    for node in g.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            weights.add(node.output[0])
            const_nodes.add(node.name)
    return weights, const_nodes


def folded_inputs(model: onnx.ModelProto) -> dict[str, list[list[str]]]:
    """``{node: [[tensor, shape, dtype], ...]}``: the weights (initializers, Constant outputs) each node reads."""
    weights, const_nodes = _constants(model)
    infos = tensor_infos(model, weights)
    out: dict[str, list[list[str]]] = {}
    for node in model.graph.node:
        if node.name in const_nodes:
            continue
        ws = []
        for t in node.input:
            if t in weights:
                info = infos.get(t)
                ws.append([t, shape_text(info.shape if info else None), short_dtype(info.dtype if info else None)])
        if ws:
            out[node.name] = ws
    return out


def graph_json(model: onnx.ModelProto, *, title: str = "") -> dict[str, Any]:
    """The compact graph the widget draws.

    ``{"title", "nodes": [{"id", "op", "sc", "at", "w"}], "edges": [[src, dst, tensor, label]],
    "colors": {op: colour}, "counts": {"nodes", "folded", "weights"}}``: ``id`` is the node name (``in:x``,
    ``out:y`` for graph inputs/outputs, op ``Input``/``Output``), ``sc`` the name-scope path, ``at`` the key
    attributes, ``w`` the folded weights ``[tensor, shape, dtype]``; an edge's ``src``/``dst`` index ``nodes``
    and its label is ``shape dtype``. Constant nodes are not in ``nodes`` (their outputs are folded weights).
    """
    g = model.graph
    weights, const_nodes = _constants(model)
    infos = tensor_infos(model)
    folded = folded_inputs(model)
    inputs = [i.name for i in g.input if i.name not in weights]
    outputs = [o.name for o in g.output]
    nodes: list[dict[str, Any]] = []
    index: dict[str, int] = {}

    def add(node_id: str, op: str, scope: str = "", attrs: list[list[str]] | None = None,
            ws: list[list[str]] | None = None) -> int:
        index[node_id] = len(nodes)
        entry: dict[str, Any] = {"id": node_id, "op": op}
        if scope:
            entry["sc"] = scope
        if attrs:
            entry["at"] = attrs
        if ws:
            entry["w"] = ws
        nodes.append(entry)
        return index[node_id]

    producer: dict[str, int] = {}
    for name in inputs:
        producer[name] = add(f"in:{name}", "Input")
    for node in g.node:
        if node.name in const_nodes:
            continue
        k = add(node.name, node.op_type, scope_of(node.name), key_attributes(node), folded.get(node.name))
        for o in node.output:
            if o:
                producer[o] = k

    def label(tensor: str) -> str:
        info = infos.get(tensor)
        return "" if info is None else f"{shape_text(info.shape)} {short_dtype(info.dtype)}"

    edges: list[list[Any]] = []
    for node in g.node:
        if node.name in const_nodes:
            continue
        dst = index[node.name]
        seen: set[str] = set()
        for t in node.input:
            if t and t not in seen and t in producer and t not in weights:
                seen.add(t)
                edges.append([producer[t], dst, t, label(t)])
    for name in outputs:
        dst = add(f"out:{name}", "Output")
        if name in producer:
            edges.append([producer[name], dst, name, label(name)])
    ops = sorted({n["op"] for n in nodes})
    return {
        "title": title or g.name,
        "nodes": nodes,
        "edges": edges,
        "colors": {op: op_color(op) for op in ops},
        "counts": {"nodes": len(g.node), "folded": len(const_nodes), "weights": sum(len(w) for w in folded.values())},
    }


def engine_graph_json(layers: Iterable[Mapping[str, Any]], *, title: str = "engine layers",
                      labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An engine's layer graph in the widget's format: one node per engine layer (op = layer type), edges by
    the tensors layers pass on (each layer mapping has ``name``, ``type``, ``inputs``, ``outputs`` as tensor-name
    lists, and optional ``precision``, ``tactic``, ``onnx_nodes``). A layer's ONNX nodes are listed in its
    attributes (``onnx``) and in ``links`` ({layer: [onnx node, ...]}) so a selection can be mapped across.
    Tensors read but written by no layer become ``in:`` nodes, tensors written but read by none ``out:`` nodes;
    ``labels`` ({tensor: "dims precision"}) labels the edges."""
    nodes: list[dict[str, Any]] = []
    producer: dict[str, int] = {}
    links: dict[str, list[str]] = {}
    rows = list(layers)
    for k, layer in enumerate(rows):
        attrs = []
        if layer.get("precision"):
            attrs.append(["prec", str(layer["precision"])])
        if layer.get("tactic"):
            attrs.append(["tactic", str(layer["tactic"])[:24]])
        onnx_nodes = [str(n) for n in layer.get("onnx_nodes") or ()]
        if onnx_nodes:
            attrs.append(["onnx", ", ".join(onnx_nodes)[:40] + (f" (+{len(onnx_nodes) - 1})" if len(onnx_nodes) > 1 else "")])
            links[str(layer["name"])] = onnx_nodes
        nodes.append({"id": str(layer["name"]), "op": str(layer.get("type") or "layer"), "at": attrs})
        for t in layer.get("outputs") or ():
            producer[str(t)] = k
    labels = labels or {}
    edges: list[list[Any]] = []
    read: set[str] = set()
    for k, layer in enumerate(rows):
        for t in layer.get("inputs") or ():
            t = str(t)
            read.add(t)
            src = producer.get(t)
            if src is None:  # an engine input
                src = producer[t] = len(nodes)
                nodes.append({"id": f"in:{t}", "op": "Input"})
            if src != k:
                edges.append([src, k, t, labels.get(t, "")])
    for t, src in list(producer.items()):
        if t not in read and nodes[src]["op"] != "Input":
            edges.append([src, len(nodes), t, labels.get(t, "")])
            nodes.append({"id": f"out:{t}", "op": "Output"})
    return {"title": title, "nodes": nodes, "edges": edges, "colors": {op: op_color(op) for op in
                                                                         sorted({n["op"] for n in nodes})},
            "counts": {"nodes": len(nodes), "folded": 0, "weights": 0}, "links": links}


def engine_graph(info: EngineInfo, *, title: str = "engine layers") -> dict[str, Any]:
    """:func:`engine_graph_json` of an engine's layer information (``workbench.profile.read_layer_info``): fused
    layers and reformats with their precision and tactic, edges labelled with the engine tensors' dims and
    precision."""
    labels: dict[str, str] = {}
    for layer in info.layers:
        for t in (*layer.inputs, *layer.outputs):
            if t.name not in labels or not labels[t.name]:
                labels[t.name] = f"{shape_text(t.dims)} {t.precision or ''}".strip() if t.dims else (t.precision or "")
    rows = [{"name": layer.name, "type": layer.type, "precision": layer.precision, "tactic": layer.tactic,
             "onnx_nodes": layer.onnx_nodes, "inputs": [t.name for t in layer.inputs],
             "outputs": [t.name for t in layer.outputs]} for layer in info.layers]
    return engine_graph_json(rows, title=title, labels=labels)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _scale(t: float) -> str:
    t = min(1.0, max(0.0, t))
    return _SCALE[round(t * (len(_SCALE) - 1))]


def overlay(values: Mapping[str, Any], title: str = "", *, log: bool = False) -> dict[str, Any]:
    """Colours for a per-node overlay: ``{"title", "values", "colors": {node: colour}, "legend": [[label, colour]],
    "kind": "numeric" | "category"}``. Numbers (all values numeric; NaN/inf count as missing) map onto a
    low-to-high scale between their min and max (``log``: of log10 values); anything else gets one colour per
    distinct value (the same colour for the same value in every overlay, like op types)."""
    present = {k: v for k, v in values.items() if v is not None and not (isinstance(v, float) and not math.isfinite(v))}
    numeric = bool(present) and all(_finite(v) for v in present.values())
    colors: dict[str, str] = {}
    legend: list[list[str]] = []
    shown: dict[str, Any] = {}
    if numeric:
        nums = {k: float(v) for k, v in present.items()}
        if log:
            nums = {k: math.log10(v) for k, v in nums.items() if v > 0}
        lo, hi = (min(nums.values()), max(nums.values())) if nums else (0.0, 0.0)
        span = (hi - lo) or 1.0
        for k, v in nums.items():
            colors[k] = _scale((v - lo) / span)
        shown = {k: float(f"{float(v):.4g}") for k, v in present.items()}
        steps = len(_SCALE) - 1
        for i in (0, steps // 2, steps):
            v = lo + span * i / steps if hi > lo else lo
            legend.append([f"{10 ** v:.3g}" if log else f"{v:.4g}", _SCALE[i]])
        kind = "numeric"
    else:
        for k, v in present.items():
            colors[k] = op_color(str(v))
            shown[k] = str(v)
        for label in sorted({str(v) for v in present.values()}):
            legend.append([label, op_color(label)])
        kind = "category"
    return {"title": title, "values": shown, "colors": colors, "legend": legend[:40], "kind": kind}
