"""INT8 Q/DQ placement for ONNX Runtime's CPU provider (:func:`~workbench.precision.qdq.quantize_model` with
``target="onnxruntime"``).

ONNX Runtime cannot turn the TensorRT placement into integer kernels (a Conv whose output is float stays a
float Conv between Q/DQ pairs: slower than FP32). Its rules, paraphrased from the ONNX Runtime docs "Quantize
ONNX Models" (https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html: QDQ format,
data types and the U8S8 recommendation for x86 CPUs) and "Graph Optimizations in ONNX Runtime"
(https://onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html): its QDQ selectors turn
``DQ -> op -> Q`` groups into QLinearConv, QGemm, QLinearMatMul, QLinearAdd; a Relu before a Q is removed when
the zero point is the range minimum (a Clip too, when the Q's range lies within the Clip's);
MaxPool/Flatten/Reshape/Transpose between a DQ and a Q of the same scale and zero point run on the 8-bit tensor.
Checked against ONNX Runtime 1.32's optimized graphs (``SessionOptions.optimized_model_filepath``,
tests/test_precision_ort_target.py):

1. Activations are uint8, asymmetric: scale = (hi - lo) / 255 and zero point = round(-lo / scale), where
   [lo, hi] is the calibrated [min, max] clipped to the method's threshold (or the override) and widened to
   contain 0 so that 0 (padding) is exact. A Relu output has lo = 0, hence zero point 0, which is what lets
   ONNX Runtime drop the Relu. Weights stay int8, symmetric, per output channel (TensorRT rule 4 in
   :mod:`workbench.precision.qdq`): the "u8s8" kernels. A Conv/Gemm bias becomes int32 with scale = input
   scale x weight scale, as QLinearConv takes it.
2. Q/DQ go on the inputs *and* the output of every weighted op, so consecutive weighted ops exchange uint8
   tensors and each ``DQ -> op -> Q`` group fuses. The output Q goes after a MatMul's bias Add (tf2onnx's split
   Dense: ORT fuses MatMul + Add into Gemm, then QGemm), after a following single-consumer
   Relu or Clip with minimum 0 (ReLU6: ORT removes both before such a Q), and BatchNormalization (fold it
   first, ``FuseBatchNorm`` / the CLI's default, or the Conv cannot fuse). Every reader of a quantized tensor
   reads the dequantized one (a Conv whose output is also read in float does not fuse), except excluded nodes
   and weighted ops / residual Adds left in float.
3. Residual Adds (TensorRT rule 3's) get Q/DQ on both inputs and on their output (after the Relu that
   follows), so they run as QLinearAdd.
4. A pass-through op (MaxPool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Identity) whose input is
   quantized gets an output Q/DQ with its input's scale and zero point (no calibration of its own). An average
   pool (GlobalAveragePool, AveragePool) of a quantized tensor gets a calibrated output Q/DQ (averaging
   changes the range), so ORT runs it as QLinearGlobalAveragePool / QLinearAveragePool, unless its output is
   a graph output.
5. A graph output gets no output Q: Gemm/MatMul then run as integer ops with a float output (QGemm,
   MatMulIntegerToFloat); a Conv producing a graph output stays float. A Gemm/MatMul whose output reaches no
   quantized input through any ops (a float tail: a Log, a Softmax, float heads) gets no output Q either: uint8 gains nothing
   there and loses what a Log amplifies (openWakeWord's mel spectrogram: a MatMul of powers, then 10 log10:
   output rel L2 0.57 with the Q, see docs/int8_accuracy.md).
6. int8 only (ONNX Runtime's CPU provider has no fp8 kernels).
7. Output heads stay float by default (TensorRT rule 8 in :mod:`workbench.precision.qdq`) and read the float tensor,
   as excluded nodes do.

:func:`~workbench.precision.qdq.activation_tensors` with ``target="onnxruntime"`` lists the tensors this placement
calibrates (inputs and outputs; a superset of the TensorRT placement's); pass them to
``calibrate(..., tensors=...)``. Names follow the convention of :mod:`workbench.precision.qdq`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import CalibrationError
from ..graph import tensor_infos
from ._common import (
    _constants,
    _consumers,
    _finish,
    _float_dtype,
    _is_float,
    _opset,
    _producers,
    _scale_values,
    _subgraph_refs,
    _typed,
    _working_copy,
    select_nodes,
)
from .qdq import WEIGHTED_OPS, _q_initializer, _quantize_weight, _weight_axis, _weighted_targets, _zero_point
from .scales import ScaleCache, TensorStats

# ONNX Runtime placement: ops between a weighted op and its output Q (ORT folds BatchNorm only before
# quantization; Relu or Clip(min=0) before a Q whose zero point is the uint8 minimum is removed), and ops that run
# on uint8 when the DQ before and the Q after share one scale and zero point (ORT drops the pair).
_ORT_EPILOGUE = {"BatchNormalization", "Relu", "Clip"}
_PASS_THROUGH = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
_ORT_POOLS = {"GlobalAveragePool", "AveragePool"}  # QLinearGlobalAveragePool / QLinearAveragePool


@dataclass(frozen=True)
class _OrtPlan:
    """Where the ONNX Runtime placement puts Q/DQ.

    ``targets``: ``{node: input indices}`` of the quantized weighted ops and residual Adds; ``tensors``:
    ``{activation: tensor whose scale/zero point it uses}`` (itself when calibrated, the input of a pass-through
    op otherwise), in graph order; ``float_readers``: nodes that keep reading the float tensor.
    """

    targets: dict[str, list[int]]
    tensors: dict[str, str]
    float_readers: frozenset[str]
    borrowed: frozenset[str] = frozenset()  # Concat inputs quantized with the Concat output's scale (not calibrated)


def _clips_at_zero(node: onnx.NodeProto, consts: Mapping[str, np.ndarray]) -> bool:
    """A Clip whose minimum is the constant 0 (ReLU6 and the like): a uint8 Q with zero point 0 replaces it."""
    if len(node.input) > 1 and node.input[1]:
        low = consts.get(node.input[1])
        return low is not None and low.size == 1 and float(low.reshape(-1)[0]) == 0.0
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return float(attrs.get("min", -np.inf)) == 0.0  # opset < 11: min is an attribute


def _output_point(node: onnx.NodeProto, consumers: Mapping[str, list[onnx.NodeProto]],
                  graph_outputs: set[str], consts: Mapping[str, np.ndarray]) -> str:
    """The tensor after ``node`` where its output Q goes: past a MatMul's single-consumer bias Add (ORT fuses the
    two into a Gemm, then DQ -> Gemm -> Q into QGemm) and a chain of single-consumer BatchNorm, Relu and
    Clip(min=0)."""
    out = node.output[0]
    first = True
    while out not in graph_outputs:
        users = consumers.get(out, [])
        if len(users) != 1:
            break
        u = users[0]
        bias = (first and u.op_type == "Add" and len(u.input) == 2
                and sum(i in consts for i in u.input) == 1 and _bias_shaped(node, u, consts))
        if not bias and (u.op_type not in _ORT_EPILOGUE or (u.op_type == "Clip" and not _clips_at_zero(u, consts))):
            break
        out, first = u.output[0], False
    return out


def _bias_shaped(node: onnx.NodeProto, add: onnx.NodeProto, consts: Mapping[str, np.ndarray]) -> bool:
    """A MatMul's Add of a constant with one value per output column (a bias, the other half of a Gemm that an
    exporter split): ORT fuses the two into a Gemm before it fuses Q/DQ."""
    c = next(consts[i] for i in add.input if i in consts)
    return node.op_type == "MatMul" and c.ndim >= 1 and int(np.prod(c.shape[:-1])) == 1


def _reaches(t: str, quantized_inputs: set[str], consumers: Mapping[str, list[onnx.NodeProto]]) -> bool:
    """Whether ``t`` is, or reaches through any ops (a PRelu, a bias, a layout op), an input that gets Q/DQ: the
    tensor lies inside the quantized part of the graph rather than on a float tail (a Log, a Softmax output)."""
    stack, seen = [t], set()
    while stack:
        x = stack.pop()
        if x in quantized_inputs:
            return True
        if x in seen:
            continue
        seen.add(x)
        stack += [o for u in consumers.get(x, []) for o in u.output if o]
    return False


def _ort_plan(model: onnx.ModelProto, nodes: Sequence[str], exclude: Sequence[str],
              float_heads: bool = False) -> _OrtPlan:
    model = _typed(model)
    infos = tensor_infos(model)
    targets = _weighted_targets(model, nodes, exclude, "onnxruntime", float_heads)
    every = _weighted_targets(model, (), (), "onnxruntime", False)  # heads left float read the float tensor
    excluded = set(select_nodes(model, exclude, what="exclude")) if exclude else set()
    const_values = _constants(model)
    consts = set(const_values)
    consumers = _consumers(model)
    producers = _producers(model)
    graph_outputs = {o.name for o in model.graph.output} | _subgraph_refs(model.graph)
    wanted: set[str] = set()
    for n in model.graph.node:
        if n.name in targets:
            wanted.update(n.input[k] for k in targets[n.name] if n.input[k] not in consts)
    read_quantized = set(wanted)
    for n in model.graph.node:
        if n.name not in targets:
            continue
        out = _output_point(n, consumers, graph_outputs, const_values)
        if out in graph_outputs or not _is_float(out, infos):
            continue
        if n.op_type in ("Gemm", "MatMul") and not _reaches(out, read_quantized, consumers):
            continue  # rule 5: an integer Gemm/MatMul with a float output, for float readers (a Log, a Softmax)
        wanted.add(out)
    # average pooling of a quantized tensor (through pass-through ops) runs on uint8 too when a Q can follow it
    chosen = set(select_nodes(model, nodes, what="quantize")) if nodes else None
    quantized = set(wanted)
    for n in model.graph.node:
        if not n.input or n.input[0] not in quantized:
            continue
        if n.op_type in _PASS_THROUGH:
            quantized.add(n.output[0])
        elif (n.op_type in _ORT_POOLS and n.name not in excluded and (chosen is None or n.name in chosen)
              and n.output[0] not in graph_outputs and _is_float(n.output[0], infos)):
            targets[n.name] = [0]
            wanted.update((n.input[0], n.output[0]))
            quantized.add(n.output[0])
    # a Concat feeding a quantized tensor runs as QLinearConcat: its inputs not yet quantized take the output's
    # scale and zero point (a concatenation's range is the union of its inputs'), the others keep their own
    borrowed: dict[str, str] = {}
    for n in model.graph.node:
        if (n.op_type != "Concat" or n.output[0] not in wanted or n.name in excluded
                or (chosen is not None and n.name not in chosen)
                or not all(i and _is_float(i, infos) for i in n.input)):
            continue
        targets[n.name] = list(range(len(n.input)))
        for i in n.input:
            if i in quantized:
                wanted.add(i)
            else:
                borrowed.setdefault(i, n.output[0])
    # a quantized tensor made by a layout op (Transpose, Reshape, ...) from a float tensor read by nothing else:
    # the Q moves before the op (same values, so the same range), which then runs on uint8 (a graph input's NHWC
    # Transpose: ORT's layout pass then cancels it)
    grew = True
    while grew:
        grew = False
        for t in list(wanted):
            src = producers.get(t)
            if src is None or src.op_type not in _PASS_THROUGH - {"MaxPool"} or not src.input:
                continue
            s = src.input[0]
            if (s not in wanted and s not in consts and _is_float(s, infos) and s not in graph_outputs
                    and all(u is src for u in consumers.get(s, []))):
                wanted.add(s)
                grew = True
    float_readers = (set(every) - set(targets)) | excluded
    # a Q/DQ pair whose every reader reads the float tensor (a body conv feeding only float heads) is dead weight
    wanted = {t for t in wanted if any(u.name not in float_readers for u in consumers.get(t, []))}
    order = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output if o]
    tensors: dict[str, str] = {}
    for t in order:
        if t in borrowed:
            continue
        if t not in wanted:
            continue
        src = producers.get(t)
        if src is not None and src.op_type in _PASS_THROUGH and src.input and src.input[0] in tensors:
            tensors[t] = tensors[src.input[0]]  # same scale and zero point: ORT runs the op on uint8
        else:
            tensors[t] = t
    for t, out in borrowed.items():
        tensors[t] = tensors[out]
    return _OrtPlan(targets, tensors, frozenset(float_readers), frozenset(borrowed))


def _asymmetric_ranges(scales: ScaleCache | Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """``{tensor: (lo, hi)}``: the calibrated min/max clipped to the method's threshold (or override)."""
    out: dict[str, tuple[float, float]] = {}
    if isinstance(scales, ScaleCache):
        for k, v in scales.tensors.items():
            out[k] = _clipped_range(v, float(v.value))
        return out
    for k, v in scales.items():
        if isinstance(v, (tuple, list)):
            out[k] = (float(v[0]), float(v[1]))
        else:
            out[k] = (-float(v), float(v))
    return out


def _clipped_range(stats: TensorStats, threshold: float) -> tuple[float, float]:
    """The calibrated [min, max] clipped to ``threshold`` (symmetric when no range was recorded: hand-made stats)."""
    if stats.min == 0.0 and stats.max == 0.0:
        return -threshold, threshold
    return max(float(stats.min), -threshold), min(float(stats.max), threshold)


def uint8_params(stats: TensorStats, threshold: float | None = None) -> tuple[float, int]:
    """The uint8 scale and zero point this placement gives a tensor with ``stats`` at ``threshold`` (default: its
    chosen amax): what the Calibrate tab shows for ``target="onnxruntime"``."""
    return _uint8_params(*_clipped_range(stats, float(stats.value if threshold is None else threshold)))


def _uint8_params(lo: float, hi: float) -> tuple[float, int]:
    """Scale and uint8 zero point for the range [lo, hi] (widened to contain 0, so 0 is exact)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32((hi - lo) / 255.0))
    return scale, int(np.clip(np.rint(-lo / scale), 0, 255))


def _quantize_for_ort(model: onnx.ModelProto, scales: ScaleCache | Mapping[str, Any], *, exclude: Sequence[str],
                      nodes: Sequence[str], per_channel: bool, float_heads: bool = False) -> onnx.ModelProto:
    """The ``target="onnxruntime"`` placement (module docstring, "ONNX Runtime (CPU) placement")."""
    model = _typed(model)
    plan = _ort_plan(model, nodes, exclude, float_heads)
    ranges = _asymmetric_ranges(scales)
    consumers = _consumers(model)
    unfused = [u.name for n in model.graph.node if n.name in plan.targets and n.op_type in ("Conv", "ConvTranspose")
               for u in consumers.get(n.output[0], []) if u.op_type == "BatchNormalization"]
    if unfused:
        warnings.warn(f"BatchNormalization {unfused[:3]} follow quantized convolutions: ONNX Runtime cannot fuse "
                      "those convolutions into QLinearConv; fold them first (FuseBatchNorm edit; workbench quantize "
                      "does by default)", UserWarning, stacklevel=3)
    out, consumers, inits, names, producers, const_values = _working_copy(model)
    g = out.graph
    infos = tensor_infos(model)
    reader_of: dict[str, str] = {}  # activation -> a quantized node reading it (for messages)
    for name, idx in plan.targets.items():
        for k in idx:
            reader_of.setdefault(names[name].input[k], f"input {k} of node '{name}'")
    new_inits: list[TensorProto] = []
    params: dict[str, tuple[str, str, float]] = {}
    act_nodes: dict[str, list[onnx.NodeProto]] = {}
    for t, src in plan.tensors.items():
        if src == t:
            if t not in ranges:
                where = reader_of.get(t) or (f"output of node '{producers[t].name}'" if t in producers
                                             else "a graph input")
                raise CalibrationError(
                    f"no calibrated range for tensor '{t}' ({where}), which the onnxruntime placement quantizes",
                    hint="calibrate with the tensors this target needs: calibrate(model, data, "
                         "tensors=activation_tensors(model, target='onnxruntime')) (the CLI and the Calibrate tab "
                         "do this when the target is onnxruntime)")
            lo, hi = ranges[t]
            lo, hi = min(lo, 0.0), max(hi, 0.0)  # widened to include 0 first: a constant tensor has zero width
            if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 0:
                raise CalibrationError(
                    f"tensor '{t}' has calibrated range [{lo}, {hi}]: its scale would be 0",
                    hint="use calibration data that activates it, set an 'override' amax for it in the scale cache, "
                         "or exclude the node that reads it")
            scale, zp = _uint8_params(lo, hi)
            new_inits += [numpy_helper.from_array(_scale_values(scale, _float_dtype(t, infos)), f"{t}__scale"),
                          numpy_helper.from_array(np.array(zp, dtype=np.uint8), f"{t}__zero_point")]
            params[t] = (f"{t}__scale", f"{t}__zero_point", scale)
        else:
            params[t] = params[src]
        scale_name, zp_name, _ = params[t]
        act_nodes[t] = [
            helper.make_node("QuantizeLinear", [t, scale_name, zp_name], [f"{t}__q"], name=f"{t}__QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{t}__q", scale_name, zp_name], [f"{t}__dq"],
                             name=f"{t}__DequantizeLinear")]
    weight_nodes: list[onnx.NodeProto] = []
    dq_of: dict[str, str] = {}
    for node_name, idx in plan.targets.items():
        node = names[node_name]
        weight_scale = None
        for k in idx:
            t = node.input[k]
            if node.op_type not in WEIGHTED_OPS or (t not in inits and t not in const_values):
                continue
            if t in dq_of:
                node.input[k] = dq_of[t]
                continue
            arr = (numpy_helper.to_array(inits[t]) if t in inits else const_values[t]).astype(np.float32)
            axis = _weight_axis(node, k, arr.shape) if per_channel else None
            w_scale, q = _quantize_weight(arr, axis, "int8", _float_dtype(t, infos))
            weight_scale = w_scale if k == 1 else None
            shared = t not in inits or any(u.name not in plan.targets for u in consumers.get(t, []))
            dq_out = f"{t}__dq" if shared else t
            new_inits += [_q_initializer(q, f"{t}__int8", "int8"), numpy_helper.from_array(w_scale, f"{t}__scale"),
                          _zero_point(f"{t}__zero_point", "int8", w_scale.shape)]
            weight_nodes.append(helper.make_node("DequantizeLinear", [f"{t}__int8", f"{t}__scale", f"{t}__zero_point"],
                                                 [dq_out], name=f"{t}__DequantizeLinear", axis=axis))  # None: no attribute
            if not shared:
                g.initializer.remove(inits.pop(t))
            dq_of[t] = node.input[k] = dq_out
        bias = node.input[2] if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 else ""
        x = node.input[0]
        if bias in inits and weight_scale is not None and x in params and bias not in dq_of \
                and inits[bias].data_type == TensorProto.FLOAT \
                and all(u is node for u in consumers.get(bias, [])):
            # int32 bias with scale = input scale * weight scale: what ORT's QLinearConv/QGemm take
            b = numpy_helper.to_array(inits[bias]).astype(np.float64).reshape(-1)
            bscale = (np.float64(params[x][2]) * weight_scale.astype(np.float64)).reshape(-1)
            per_element = _opset(out) >= 13  # DequantizeLinear-10..12 take one scale per tensor
            if bscale.size == 1 and per_element:
                bscale = np.full(b.shape, bscale[0])
            if (bscale.shape == b.shape or bscale.size == 1) and np.all(bscale > 0):
                bq = np.clip(np.rint(b / bscale), -(2**31) + 1, 2**31 - 1).astype(np.int32)
                g.initializer.remove(inits.pop(bias))
                scalar = not per_element
                new_inits += [numpy_helper.from_array(bq, f"{bias}__int32"),
                              numpy_helper.from_array(bscale.astype(np.float32).reshape(() if scalar else b.shape),
                                                      f"{bias}__scale"),
                              numpy_helper.from_array(np.zeros(() if scalar else b.shape, np.int32),
                                                      f"{bias}__zero_point")]
                weight_nodes.append(helper.make_node(
                    "DequantizeLinear", [f"{bias}__int32", f"{bias}__scale", f"{bias}__zero_point"], [bias],
                    name=f"{bias}__DequantizeLinear", axis=None if scalar else 0))
                dq_of[bias] = bias
    for n in g.node:  # every reader but the float ones takes the dequantized tensor
        if n.name in plan.float_readers:
            continue
        for k, i in enumerate(n.input):
            if i in act_nodes:
                n.input[k] = f"{i}__dq"
    g.initializer.extend(new_inits)
    ordered: list[onnx.NodeProto] = list(weight_nodes)
    for t in [i.name for i in g.input] + [t for t in act_nodes if t not in producers]:  # inputs, initializers
        ordered += act_nodes.pop(t, [])
    for n in g.node:
        ordered.append(n)
        for o in n.output:
            ordered += act_nodes.pop(o, [])
    read = {i for n in ordered for i in n.input} | {o.name for o in g.output} | _subgraph_refs(g)
    ordered = [n for n in ordered if n.op_type != "Constant" or n.output[0] in read]
    del g.node[:]
    g.node.extend(ordered)
    del g.value_info[:]
    return _finish(out, "quantize_model")
