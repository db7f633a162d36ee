"""ONNX Runtime's dynamic-quantisation integer ops back to float ops TensorRT can parse.

``DynamicQuantizeLinear`` is emulated with float ops (ReduceMin/ReduceMax, Div, Round, Clip), so the
rewritten graph computes the same quantised values as ONNX Runtime; ``ConvInteger``/``MatMulInteger``
become ``Conv``/``MatMul`` on zero-point-centred float operands (constant weights are converted once).
The integer result tensor keeps its name: a consumer ``Cast(to=float)`` is absorbed, any other consumer
gets an exact ``Cast(to=int32)``. ``DynamicQuantizeLSTM`` is refused with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from ..errors import EditError
from ._gs import unique_name

__all__ = ["dequantize_integer_ops", "INTEGER_OPS"]

INTEGER_OPS = ("ConvInteger", "MatMulInteger")
_FLOAT = np.float32


class _Rewriter:
    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self.used_t = set(graph.tensors())
        self.used_n = {n.name for n in graph.nodes}
        self.new_nodes: list[gs.Node] = []
        self.gone: set[int] = set()
        self.emulated: dict[int, tuple[gs.Tensor, gs.Tensor]] = {}  # DQL node id -> (centred x, zp float)
        # DQL output y id -> the same: a DQL read by several integer ops is emulated once, and once emulated it no
        # longer produces y (the first reader's rewrite cleared it), so later readers find it by y
        self.emulated_y: dict[int, tuple[gs.Tensor, gs.Tensor]] = {}

    def var(self, base: str) -> gs.Variable:
        return gs.Variable(unique_name(base, self.used_t))

    def const(self, base: str, value: np.ndarray) -> gs.Constant:
        return gs.Constant(unique_name(base, self.used_t), np.asarray(value))

    def node(self, op: str, base: str, inputs: list[gs.Tensor], outputs: list[gs.Tensor], **attrs: object) -> gs.Node:
        n = gs.Node(op, name=unique_name(base, self.used_n), attrs=dict(attrs), inputs=inputs, outputs=outputs)
        self.new_nodes.append(n)
        return n

    def emulate_dql(self, dql: gs.Node) -> tuple[gs.Tensor, gs.Tensor]:
        """Float ops computing DynamicQuantizeLinear's (y - zero_point) and zero_point; scale keeps its tensor."""
        if id(dql) in self.emulated:
            return self.emulated[id(dql)]
        x, y, scale = dql.inputs[0], dql.outputs[0], dql.outputs[1]
        p = dql.name
        zero = self.const(f"{p}_zero", np.array(0, _FLOAT))
        qmax = self.const(f"{p}_qmax", np.array(255, _FLOAT))
        mx, mn = self.var(f"{p}_max"), self.var(f"{p}_min")
        mx0, mn0, rng = self.var(f"{p}_max0"), self.var(f"{p}_min0"), self.var(f"{p}_range")
        self.node("ReduceMax", f"{p}/ReduceMax", [x], [mx], keepdims=0)
        self.node("ReduceMin", f"{p}/ReduceMin", [x], [mn], keepdims=0)
        self.node("Max", f"{p}/Max", [mx, zero], [mx0])
        self.node("Min", f"{p}/Min", [mn, zero], [mn0])
        self.node("Sub", f"{p}/Range", [mx0, mn0], [rng])
        dql.outputs.clear()
        dql.inputs.clear()
        self.gone.add(id(dql))
        self.node("Div", f"{p}/Scale", [rng, qmax], [scale])  # same tensor name as DQL's y_scale
        neg, zp_raw, zp_clip, zp = (self.var(f"{p}_{s}") for s in ("neg_min", "zp_raw", "zp_clip", "zp_float"))
        self.node("Neg", f"{p}/NegMin", [mn0], [neg])
        self.node("Div", f"{p}/ZeroPointRaw", [neg, scale], [zp_raw])
        self.node("Clip", f"{p}/ZeroPointClip", [zp_raw, zero, qmax], [zp_clip])
        self.node("Round", f"{p}/ZeroPoint", [zp_clip], [zp])
        xs, xr, xq, q, centred = (self.var(f"{p}_{s}") for s in ("scaled", "rounded", "shifted", "q", "centred"))
        self.node("Div", f"{p}/DivScale", [x, scale], [xs])
        self.node("Round", f"{p}/Round", [xs], [xr])
        self.node("Add", f"{p}/AddZeroPoint", [xr, zp], [xq])
        self.node("Clip", f"{p}/Saturate", [xq, zero, qmax], [q])
        self.node("Sub", f"{p}/Centre", [q, zp], [centred])
        self.emulated[id(dql)] = (centred, zp)
        self.emulated_y[id(y)] = (centred, zp)
        return centred, zp

    def centred(self, owner: gs.Node, t: gs.Tensor, zp: gs.Tensor | None, role: str) -> gs.Tensor:
        """Float ``t - zp`` for an integer operand of ``owner``."""
        where = f"dequantize_integer_ops: {owner.op} '{owner.name}'"
        if id(t) in self.emulated_y:
            return self.emulated_y[id(t)][0]
        prod = t.inputs[0] if isinstance(t, gs.Variable) and t.inputs else None
        if prod is not None and prod.op == "DynamicQuantizeLinear" and prod.outputs and prod.outputs[0] is t:
            if zp is not None and zp.name and prod.outputs[2] is not zp:
                raise EditError(f"{where}: its {role} comes from DynamicQuantizeLinear '{prod.name}' but its zero "
                                f"point '{zp.name}' does not", hint="this pattern is not ONNX Runtime's; convert it by hand")
            return self.emulate_dql(prod)[0]
        if isinstance(t, gs.Constant) and (zp is None or not zp.name or isinstance(zp, gs.Constant)):
            value = np.asarray(t.values).astype(_FLOAT)
            if zp is not None and zp.name:
                z = np.asarray(zp.values).astype(_FLOAT)
                if owner.op == "ConvInteger" and z.ndim == 1 and role == "weight":
                    z = z.reshape((-1,) + (1,) * (value.ndim - 1))
                elif owner.op == "MatMulInteger" and z.ndim == 1 and role == "A":
                    z = z.reshape(-1, 1)
                value = value - z
            return self.const(f"{t.name}_float", value)
        if zp is not None and zp.name and (zp.shape is None or int(np.prod(zp.shape)) != 1):
            raise EditError(f"{where}: the {role} '{t.name}' is computed and its zero point '{zp.name}' is not "
                            "a scalar", hint="only scalar zero points of computed operands can be converted")
        tf = self.var(f"{t.name}_as_float")
        self.node("Cast", f"{owner.name}/Cast_{role}", [t], [tf], to=TensorProto.FLOAT)
        if zp is None or not zp.name:
            return tf
        zf, out = self.var(f"{zp.name}_as_float"), self.var(f"{t.name}_centred")
        self.node("Cast", f"{owner.name}/Cast_{role}_zero_point", [zp], [zf], to=TensorProto.FLOAT)
        self.node("Sub", f"{owner.name}/Centre_{role}", [tf, zf], [out])
        return out

    def rewrite(self, node: gs.Node) -> None:
        ins = list(node.inputs) + [None] * (4 - len(node.inputs))
        a, b, azp, bzp = ins[:4]
        a_f = self.centred(node, a, azp, "A" if node.op == "MatMulInteger" else "input")
        b_f = self.centred(node, b, bzp, "B" if node.op == "MatMulInteger" else "weight")
        y = node.outputs[0]
        casts = [c for c in y.outputs if c.op == "Cast" and c.attrs.get("to") == TensorProto.FLOAT]
        node.inputs.clear()
        node.outputs.clear()
        self.gone.add(id(node))
        self.used_n.discard(node.name)  # the float op takes over the integer op's name
        op = "Conv" if node.op == "ConvInteger" else "MatMul"
        attrs = dict(node.attrs) if op == "Conv" else {}
        if len(casts) == 1 and len(y.outputs) == 1 and y not in self.graph.outputs:
            cast = casts[0]
            z = cast.outputs[0]
            cast.inputs.clear()
            cast.outputs.clear()
            self.gone.add(id(cast))
            self.node(op, node.name, [a_f, b_f], [z], **attrs)  # the float result keeps the Cast's tensor name
        else:
            y_f = self.var(f"{y.name}_float")
            self.node(op, node.name, [a_f, b_f], [y_f], **attrs)
            self.node("Cast", f"{node.name}/ToInt32", [y_f], [y], to=TensorProto.INT32)


def _check(graph: gs.Graph, targets: list[gs.Node]) -> None:
    mine = {id(n) for n in targets}
    for node in graph.nodes:
        if node.op != "DynamicQuantizeLinear":
            continue
        for out in (node.outputs[0], node.outputs[2]) if len(node.outputs) > 2 else node.outputs[:1]:
            others = [c.name for c in out.outputs if id(c) not in mine]
            if others or out in graph.outputs:
                raise EditError(
                    f"dequantize_integer_ops: DynamicQuantizeLinear '{node.name}' output '{out.name}' is also used "
                    f"by {others or 'the graph outputs'}, which are not integer ops this edit converts",
                    hint="convert or remove those consumers first (only ConvInteger/MatMulInteger are rewritten)",
                )
    if targets and graph.opset < 11:
        raise EditError(f"dequantize_integer_ops needs opset 11 or newer (the model has {graph.opset})",
                        hint="convert the model with onnx.version_converter first")


def _lstm_weight(node: gs.Node, q: gs.Tensor, scale: gs.Tensor, zp: gs.Tensor, what: str) -> np.ndarray:
    """(q - zero_point) * scale for DynamicQuantizeLSTM's transposed [dirs, in, 4*hidden] int8 weight, as ONNX's
    float LSTM layout [dirs, 4*hidden, in]."""
    if not (isinstance(q, gs.Constant) and isinstance(scale, gs.Constant) and isinstance(zp, gs.Constant)):
        computed = [t.name for t in (q, scale, zp) if not isinstance(t, gs.Constant)]
        raise EditError(
            f"dequantize_integer_ops: DynamicQuantizeLSTM '{node.name}' has computed {what} tensors {computed}",
            hint="only constant (initializer) quantised weights, scales and zero points can be turned back to float")
    wq, sc, z = (np.asarray(t.values) for t in (q, scale, zp))
    dirs, four_h = wq.shape[0], wq.shape[2]
    sc = sc.astype(np.float64).reshape((dirs, 1, four_h) if sc.size == dirs * four_h else (-1, 1, 1))
    z = z.astype(np.float64).reshape((dirs, 1, four_h) if z.size == dirs * four_h else (-1, 1, 1))
    return np.transpose((wq.astype(np.float64) - z) * sc, (0, 2, 1)).astype(_FLOAT)


def _float_lstm(graph: gs.Graph, node: gs.Node, rw: _Rewriter) -> None:
    """DynamicQuantizeLSTM (com.microsoft) -> ONNX LSTM with dequantised weights (same outputs, same name)."""
    ins = list(node.inputs)
    if len(ins) < 12:
        raise EditError(f"dequantize_integer_ops: DynamicQuantizeLSTM '{node.name}' has {len(node.inputs)} inputs, "
                        "not the 12 ONNX Runtime defines", hint="the model is malformed; quantise it again")
    w = _lstm_weight(node, ins[1], ins[8], ins[9], "input-weight")
    r = _lstm_weight(node, ins[2], ins[10], ins[11], "recurrent-weight")
    inputs = [ins[0], rw.const(f"{ins[1].name}_float", w), rw.const(f"{ins[2].name}_float", r), *ins[3:8]]
    while inputs and not inputs[-1].name:
        inputs.pop()
    outputs = list(node.outputs)
    attrs = dict(node.attrs)
    node.inputs.clear()
    node.outputs.clear()
    rw.gone.add(id(node))
    rw.used_n.discard(node.name)
    rw.node("LSTM", node.name, inputs, outputs, **attrs)


def dequantize_integer_ops(graph: gs.Graph) -> int:
    """Rewrite ConvInteger/MatMulInteger (and the DynamicQuantizeLinear feeding them) and DynamicQuantizeLSTM
    as float ops; return how many integer nodes were rewritten."""
    targets = [n for n in graph.nodes if n.op in INTEGER_OPS and n.domain in ("", "ai.onnx", None)]
    lstms = [n for n in graph.nodes if n.op == "DynamicQuantizeLSTM"]
    _check(graph, targets)
    if not targets and not lstms:
        return 0
    rw = _Rewriter(graph)
    for node in lstms:
        _float_lstm(graph, node, rw)
    for node in targets:
        rw.rewrite(node)
    graph.nodes = [n for n in graph.nodes if id(n) not in rw.gone] + rw.new_nodes
    graph.cleanup().toposort()
    return len(targets) + len(lstms)
