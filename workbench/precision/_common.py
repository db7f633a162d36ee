"""Graph helpers the precision modules share: node selection, producer/consumer maps, constants, typing."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import EditError, ModelError
from ..graph import infer_shapes, name_nodes, sort_nodes


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


def _is_float32(name: str, infos: Mapping[str, Any]) -> bool:
    info = infos.get(name)
    return info is not None and info.dtype == "float32"


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


def _for_qdq(model: onnx.ModelProto, per_channel: bool, where: str = "quantize_model"
             ) -> tuple[onnx.ModelProto, bool, list[str]]:
    """``(model, per_channel, notes)``: ``model`` itself at opset >= 13; an older model converted to opset 13 with
    onnx's version converter (noted); where that fails, per-tensor Q/DQ at opset 10-12 (noted), else EditError."""
    opset = _opset(model)
    if opset >= QDQ_OPSET or (opset >= 10 and not per_channel):
        return model, per_channel, []
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, QDQ_OPSET)
        sort_nodes(converted.graph)
        name_nodes(converted)
        converted = infer_shapes(converted, where=f"the model converted to opset {QDQ_OPSET}")
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises RuntimeError/ValidationError naming the op it cannot adapt
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if opset >= 10:
            return model, False, [f"{where}: the model is ONNX opset {opset}, whose QuantizeLinear/DequantizeLinear "
                                  f"take one scale per tensor, and onnx's version converter could not convert it to "
                                  f"opset {QDQ_OPSET} ({reason}): weights are quantized per tensor"]
        raise EditError(f"{where}: the model is ONNX opset {opset}, which has no QuantizeLinear/DequantizeLinear, and "
                        f"onnx's version converter could not convert it to opset {QDQ_OPSET}: {reason}",
                        hint=f"export the model with opset {QDQ_OPSET} or newer") from exc
    return converted, per_channel, [
        f"{where}: the model was ONNX opset {opset}; converted to opset {QDQ_OPSET} with onnx's version converter "
        "for per-channel QuantizeLinear/DequantizeLinear (check the converted model's outputs against the original)"]


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
