"""Graph helpers the precision modules share: node selection, producer/consumer maps, constants, typing."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import EditError, ModelError
from ..graph import TensorInfo, infer_shapes, iter_graphs, name_nodes, sort_nodes, tensor_infos, weightless_skeleton


def select_nodes(model: onnx.ModelProto, selectors: Iterable[str], *, what: str = "node") -> list[str]:
    """Node names matching each selector: an exact node name, an op type (``op:Conv`` or ``Conv``) or a glob.

    A selector that matches nothing raises :class:`EditError` naming it.
    """
    nodes = list(model.graph.node)
    names = [n.name for n in nodes]
    out: dict[str, None] = {}
    for sel in selectors:
        if sel in names:
            out[sel] = None
            continue
        op = sel[3:] if sel.startswith("op:") else sel
        hits = [n.name for n in nodes if n.op_type == op]
        if not hits and any(c in sel for c in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, sel)]
        if not hits:
            raise EditError(f"{what} selector '{sel}' names no node of the model",
                            hint="use a node name from the layer table, an op type (op:Conv) or a glob (block1/*)")
        out.update(dict.fromkeys(hits))
    return list(out)


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output if o}


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant node outputs as arrays."""
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _typed(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` itself when every node output has a known type, else a shape-inferred copy."""
    known = {vi.name for vi in list(model.graph.value_info) + list(model.graph.output)}
    if all(o in known for n in model.graph.node for o in n.output if o):
        return model
    return infer_shapes(model, where="the model")


def _types(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Every main-graph tensor's type: the model's own where each node output has one, else shape inference's on
    the weightless skeleton (:func:`_typed`'s shape-inferred copy copies the weights too: 1.15 GB for a 194 MB tree
    ensemble, corpus F14)."""
    own = tensor_infos(model)
    if all(o in own for n in model.graph.node for o in n.output if o):
        return own
    return {**own, **tensor_infos(infer_shapes(weightless_skeleton(model)))}


def _is_float32(name: str, infos: Mapping[str, Any]) -> bool:
    info = infos.get(name)
    return info is not None and info.dtype == "float32"


QDQ_FLOATS = ("float32", "float16")  # activation types Q/DQ take (float16 from opset 19, FP16_QDQ_OPSET)


def _is_float(name: str, infos: Mapping[str, Any]) -> bool:
    """Whether ``name`` is a float tensor Q/DQ can take: float32, or float16 (an fp16-computing model)."""
    info = infos.get(name)
    return info is not None and info.dtype in QDQ_FLOATS


def _float_dtype(name: str, infos: Mapping[str, Any]) -> type[np.floating[Any]]:
    """The numpy type of float tensor ``name``'s Q/DQ scale: float16 for a float16 tensor, else float32."""
    info = infos.get(name)
    return np.float16 if info is not None and info.dtype == "float16" else np.float32


def _scale_values(scale: Any, dtype: type[np.floating[Any]] = np.float32) -> np.ndarray:
    """``scale`` (positive) as a Q/DQ scale of type ``dtype``: float32 as is; float16 rounded up where float16
    cannot hold it (11 bits, subnormal below 6.1e-5) and at least its smallest positive value, so a value at the
    calibrated amax is not clipped and no scale becomes 0. Quantize with the returned values (``x / scale``), so
    the rounding matches the graph's."""
    if dtype is np.float32:
        return np.asarray(scale, dtype=np.float32)
    exact = np.asarray(scale, dtype=np.float64)
    out = exact.astype(dtype)
    out = np.where(out.astype(np.float64) < exact, np.nextafter(out, dtype(np.inf)), out).astype(dtype)
    return np.maximum(out, np.finfo(dtype).smallest_subnormal).astype(dtype)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _subgraph_refs(graph: onnx.GraphProto) -> set[str]:
    """Names that nodes inside If/Loop/Scan bodies read (outer-scope references included)."""
    out: set[str] = set()
    for n in graph.node:
        for a in n.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for sub in subs:
                out.update(i for sn in sub.node for i in sn.input if i)
                out |= _subgraph_refs(sub)
    return out


def _finish(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    for o in model.graph.output:
        if o.type.tensor_type.elem_type == 0:
            o.ClearField("type")
    try:
        model = infer_shapes(model, where=where)
        onnx.checker.check_model(model)
    except (ModelError, onnx.checker.ValidationError) as exc:
        node = _invalid_node(model)
        blame = f" at node '{node.name}' ({node.op_type})" if node is not None else ""
        raise EditError(f"{where} produced an invalid graph{blame}: {str(exc).splitlines()[0]}",
                        hint=(f"keep node '{node.name}' in fp32 (keep=[{node.name!r}] / --exclude {node.name}) and "
                              "try again" if node is not None else "keep the nodes it changed in fp32 and try again")
                        ) from exc
    return model


def _invalid_node(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The first main-graph node the ONNX checker refuses on its own (schema, attributes), else None."""
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = model.ir_version
    ctx.opset_imports = {o.domain: o.version for o in model.opset_import}
    lex = onnx.checker.C.LexicalScopeContext()
    for n in model.graph.node:
        try:
            onnx.checker.C.check_node(n.SerializeToString(), ctx, lex)
        except Exception:
            return n
    return None


QDQ_OPSET = 13  # QuantizeLinear/DequantizeLinear-13: per-channel scales (axis); 10-12 take one scale per tensor
FP16_QDQ_OPSET = 19  # QuantizeLinear/DequantizeLinear-19: float16 inputs and scales (13-18: float32 only)
FP8_QDQ_OPSET = 19  # QuantizeLinear/DequantizeLinear-19: float8e4m3fn zero points (the first with float8 types)
_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _float16_reader(model: onnx.ModelProto) -> tuple[str, str] | None:
    """``(node, tensor)``: the first main-graph Conv/ConvTranspose/Gemm/MatMul reading a float16 tensor (the model
    computes in fp16, so its Q/DQ take float16), else None."""
    weighted = [n for n in model.graph.node if n.op_type in _WEIGHTED]
    if not weighted or not _mentions_float16(model):
        return None
    infos = _types(model)
    for n in weighted:
        for t in n.input[:2]:
            info = infos.get(t)
            if t and info is not None and info.dtype == "float16":
                return n.name, t
    return None


def _mentions_float16(model: onnx.ModelProto) -> bool:
    """Whether anything in ``model`` is or makes float16 (an input, value_info, initializer, tensor attribute, or a
    ``to``/``dtype`` attribute): without any, no tensor is float16 and shape inference need not run."""
    f16 = onnx.TensorProto.FLOAT16
    g = model.graph
    if any(vi.type.tensor_type.elem_type == f16 for vi in (*g.input, *g.value_info, *g.output)):
        return True
    for sub in iter_graphs(g):
        if any(i.data_type == f16 for i in sub.initializer):
            return True
        for n in sub.node:
            for a in n.attribute:
                if (a.type == onnx.AttributeProto.TENSOR and a.t.data_type == f16) or (
                        a.type == onnx.AttributeProto.INT and a.name in ("to", "dtype") and a.i == f16):
                    return True
    return False


def _for_qdq(model: onnx.ModelProto, per_channel: bool, where: str = "quantize_model", *, fp8: bool = False
             ) -> tuple[onnx.ModelProto, bool, list[str]]:
    """``(model, per_channel, notes)``: ``model`` itself at an opset whose Q/DQ take what it needs (13: per-channel
    scales; 19: float16 tensors and scales, for a model computing in fp16, and float8e4m3fn for ``fp8``); an older
    model converted with onnx's version converter (noted); where that fails, per-tensor Q/DQ at opset 10-12 (noted)
    for a float32 int8 model, else EditError."""
    opset = _opset(model)
    fp16 = _float16_reader(model) if opset < FP16_QDQ_OPSET else None
    target = FP8_QDQ_OPSET if fp8 else FP16_QDQ_OPSET if fp16 else QDQ_OPSET
    if opset >= target or (not fp8 and not fp16 and opset >= 10 and not per_channel):
        return model, per_channel, []
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, target)
        sort_nodes(converted.graph)
        name_nodes(converted)
        converted = infer_shapes(converted, where=f"the model converted to opset {target}")
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises RuntimeError/ValidationError naming the op it cannot adapt
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if fp8:
            raise EditError(f"{where}: fp8 QuantizeLinear/DequantizeLinear (float8e4m3fn) need ONNX opset "
                            f"{FP8_QDQ_OPSET}; the model is opset {opset} and onnx's version converter could not "
                            f"convert it: {reason}",
                            hint=f"export the model with opset {FP8_QDQ_OPSET} or newer, or quantize to int8") from exc
        if fp16:
            raise EditError(f"{where}: node '{fp16[0]}' reads float16 tensor '{fp16[1]}', and QuantizeLinear/"
                            f"DequantizeLinear take float16 only from ONNX opset {FP16_QDQ_OPSET}; the model is opset "
                            f"{opset} and onnx's version converter could not convert it: {reason}",
                            hint=f"export the model with opset {FP16_QDQ_OPSET} or newer, or in float32") from exc
        if opset >= 10:
            return model, False, [f"{where}: the model is ONNX opset {opset}, whose QuantizeLinear/DequantizeLinear "
                                  f"take one scale per tensor, and onnx's version converter could not convert it to "
                                  f"opset {QDQ_OPSET} ({reason}): weights are quantized per tensor"]
        raise EditError(f"{where}: the model is ONNX opset {opset}, which has no QuantizeLinear/DequantizeLinear, and "
                        f"onnx's version converter could not convert it to opset {QDQ_OPSET}: {reason}",
                        hint=f"export the model with opset {QDQ_OPSET} or newer") from exc
    why = ("for fp8 QuantizeLinear/DequantizeLinear (float8e4m3fn)" if fp8
           else f"for float16 QuantizeLinear/DequantizeLinear (node '{fp16[0]}' computes in fp16)" if fp16
           else "for per-channel QuantizeLinear/DequantizeLinear")
    return converted, per_channel, [
        f"{where}: the model was ONNX opset {opset}; converted to opset {target} with onnx's version converter "
        f"{why} (check the converted model's outputs against the original)"]


def _working_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, list[onnx.NodeProto]],
                                                  dict[str, onnx.TensorProto], dict[str, onnx.NodeProto],
                                                  dict[str, onnx.NodeProto], dict[str, np.ndarray]]:
    """A copy of ``model`` to place Q/DQ in, with its lookups: (copy, consumers, initializers, nodes by name,
    producers, Constant-node values)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    const_values = {k: v for k, v in _constants(out).items() if k not in inits}
    return out, _consumers(out), inits, {n.name: n for n in g.node}, _producers(out), const_values


def _float16_bias_as_add(model: onnx.ModelProto) -> None:
    """Move the float16 bias of each Conv/ConvTranspose/Gemm whose data and weight come from DequantizeLinear into an
    Add after it (in place; the Add writes the node's output name, the node ``<output>__nobias``).

    ONNX Runtime's WeightBiasQuantization pass rewrites such a bias into int32 with scale = input scale x weight
    scale, computed in the bias's type: in float16 that scale underflows and bias / scale overflows, so the model
    runs wrong in ONNX Runtime (ORT 1.32; IS-Net's INT8 scored mask IoU 0.71 in the corpus suite, 0.97 with
    the bias moved; one image's mask went from IoU 0.0007 to 0.996). A node
    without a bias is left alone by that pass; TensorRT fuses a constant Add into the convolution's epilogue."""
    g = model.graph
    producers = _producers(model)
    inits = {i.name: i for i in g.initializer}
    detached: set[str] = set()
    out: list[onnx.NodeProto] = []
    for n in g.node:
        out.append(n)
        if n.op_type not in _WEIGHTED[:3] or len(n.input) < 3 or not n.input[2]:
            continue
        bias = inits.get(n.input[2])
        data, weight = (producers.get(t) for t in n.input[:2])
        if (bias is None or bias.data_type != onnx.TensorProto.FLOAT16 or len(bias.dims) != 1
                or data is None or data.op_type != "DequantizeLinear"
                or weight is None or weight.op_type != "DequantizeLinear" or weight.input[0] not in inits):
            continue
        b = numpy_helper.to_array(bias)
        if n.op_type == "Gemm":
            attrs = {a.name: a for a in n.attribute}
            if "beta" in attrs:
                b = (b.astype(np.float32) * attrs["beta"].f).astype(np.float16)
                n.attribute.remove(attrs["beta"])
        else:  # one value per output channel, broadcast over the spatial dims
            b = b.reshape((-1,) + (1,) * (len(inits[weight.input[0]].dims) - 2))
        name = f"{n.output[0]}__bias"
        g.initializer.append(numpy_helper.from_array(b, name))
        del n.input[2]
        detached.add(bias.name)
        y = n.output[0]
        n.output[0] = f"{y}__nobias"
        out.append(onnx.helper.make_node("Add", [n.output[0], name], [y], name=f"{n.name}__bias"))
    del g.node[:]
    g.node.extend(out)
    read = {i for n in out for i in n.input} | {o.name for o in g.output} | _subgraph_refs(g)
    for name in detached - read:
        g.initializer.remove(inits[name])
