"""INT8 / FP8 Q/DQ nodes where TensorRT fuses them (:func:`quantize_model`): placement rules and where they
come from.

TensorRT developer guide, "Working with Quantized Types", sections "Explicit Quantization" and
"Q/DQ Layer-Placement Recommendations"
(https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/inference-library/work-quantized-types.html and
https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html).
Paraphrased, not quoted:

1. Quantize all inputs of weighted operations (Convolution, Transposed Convolution, GEMM/MatMul): the
   activation per tensor, the weights per channel. TensorRT fuses the DQ nodes into the weighted layer
   and runs it in INT8.
2. By default do not quantize the outputs of weighted operations: TensorRT moves Q nodes backwards over
   commuting layers (ReLU, pooling, ...) and fuses BatchNorm and activations into the convolution, so a
   Q/DQ pair on the next weighted layer's input is enough; an extra Q/DQ pair after every op only adds
   conversions (the guide's figure of a suboptimal fusion: an extra Q/DQ pair separates a convolution
   from the element-wise addition it could fuse with).
3. Residual connections: put Q/DQ on the residual (identity) input of an element-wise Add fed by a
   weighted layer, so TensorRT can fuse the Add into that convolution. NVIDIA's TensorFlow Quantization
   Toolkit, "Add Custom QDQ Insertion Case", shows the ResNet case
   (https://docs.nvidia.com/deeplearning/tensorrt/tensorflow-quantization-toolkit/docs/docs/add_custom_qdq_cases.html).
4. TensorRT's quantization is symmetric (zero point 0): activations per tensor, weights per output channel
   (axis 0 for Conv and for Gemm with transB=1, axis 1 for ConvTranspose and for a constant K x N MatMul/Gemm
   operand).
5. Weights may be given pre-quantized (INT8/FP8 initializers) when a DequantizeLinear sits between them
   and the operator that uses them ("Explicit Quantization", Quantized Weights); we quantize offline.
6. Ops that TensorRT runs better in float (Softmax, LayerNorm, Resize, reductions, element-wise ops other
   than residual adds) get no Q/DQ.
7. FP8 (float8e4m3fn) Q/DQ needs ONNX opset >= 19 (QuantizeLinear-19); an older model is converted with onnx's
   version converter, with a warning that says so (refused with the converter's reason where it fails). Scales
   as TensorRT's FP8 recipe and ModelOpt set them: activations ``amax / 448`` per tensor, weights per output
   channel.
8. Output heads stay float in the default recipe (``Quantize.float_heads``, the CLI's default; here
   ``float_heads=True``; ours, measured in docs/int8_accuracy.md): a
   weighted op with no other weighted op between it and a graph output (a detector's score and box convs, a
   classifier's last Gemm, a segmentation or super-resolution net's last conv) is left unquantized, unless the
   model has no other weighted op or ``nodes`` names it. Head weights often cancel large terms (BlazeFace's score
   conv: weights up to 96 on a 96-channel input), so their input's rounding error reaches the output amplified;
   on BlazeFace this took the detection agreement from 0.11 to 0.83 (TensorRT placement) at about 1 % of the
   FLOPs. TensorRT's own guide leaves the choice of layers to keep in higher precision to the user.
9. A model that computes in fp16 gets Q/DQ on its float16 tensors with float16 scales (QuantizeLinear-19 takes
   them; an older model is converted with onnx's version converter, and told); float16 weight scales are rounded
   up, so no channel clips or gets a zero scale. ``target="onnxruntime"`` quantizes it in float32 instead
   (:mod:`workbench.precision.upcast`: ONNX Runtime's integer kernels take float32 only).
10. FP8 leaves float the convolutions TensorRT has no FP8 kernels for, as ModelOpt's FP8 mode does
   (``find_nodes_from_convs_to_exclude``, nvidia-modelopt 0.47): a Conv whose weight has 16 or fewer input channels
   per group (depthwise convs, an RGB stem) or output channels, or a filter of more than 32 taps
   (:func:`fp8_float_convs`; ``nodes`` chooses otherwise). On BlazeFace (32 depthwise convs) FP8's output rel L2
   went from 0.55 to 0.31 with max calibration, 0.55 to 0.26 with mse (docs/fp8.md).

Q/DQ nodes keep the original tensor names on the full-precision side: the producer still writes ``T``,
``Q`` writes ``T__q`` and ``DQ`` writes ``T__dq``, which the quantized consumers read. A weight ``W``
becomes the initializer ``W__int8`` (``W__fp8``) with ``W__scale``, and its DequantizeLinear writes ``W``
again (``W__dq`` when a float consumer still reads the original).

``target="onnxruntime"`` places them for ONNX Runtime's CPU provider instead: :mod:`workbench.precision.qdq_ort`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..choices import TARGETS
from ..errors import CalibrationError, EditError
from ..graph import iter_graphs, tensor_infos
from ._common import (
    _constants,
    _finish,
    _float16_bias_as_add,
    _float_dtype,
    _for_qdq,
    _is_float,
    _producers,
    _scale_values,
    _subgraph_refs,
    _typed,
    _types,
    _working_copy,
    select_nodes,
)
from .scales import ScaleCache
from .upcast import float32_compute, with_aliases

__all__ = ["TARGETS", "WEIGHTED_OPS", "quantization_targets", "quantizable_nodes", "activation_tensors",
           "check_dtype", "check_target", "quantize_model", "output_heads", "fp8_float_convs"]

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_Q = {"int8": (TensorProto.INT8, 127.0), "fp8": (TensorProto.FLOAT8E4M3FN, 448.0)}
# Pointwise ops TensorRT fuses into a weighted layer's epilogue (between it and a residual Add).
_EPILOGUE = {"BatchNormalization", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Identity"}


def _weight_axis(node: onnx.NodeProto, input_index: int, shape: Sequence[int]) -> int | None:
    """Output-channel axis of a weight input, or None for per-tensor."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv" and input_index == 1:
        return 0
    if node.op_type == "ConvTranspose" and input_index == 1:
        return 1 if int(attrs.get("group", 1)) == 1 else None
    if node.op_type == "Gemm" and input_index == 1 and len(shape) == 2:
        return 0 if int(attrs.get("transB", 0)) else 1
    if node.op_type == "MatMul" and input_index == 1 and len(shape) == 2:
        return 1
    return None


def _residual_adds(model: onnx.ModelProto, weighted: set[str]) -> dict[str, list[int]]:
    """Add nodes fed by a weighted op (directly or through BatchNormalization) plus another activation.

    Returns ``{add_name: [input indices to quantize]}``: the residual (identity) input, and also the
    weighted input when it reaches the Add through something TensorRT will not fuse.
    """
    producers = _producers(model)
    consts = {i.name for i in model.graph.initializer} | {
        n.output[0] for n in model.graph.node if n.op_type == "Constant" and n.output}
    out: dict[str, list[int]] = {}
    for n in model.graph.node:
        if n.op_type != "Add" or len(n.input) != 2 or any(i in consts for i in n.input):
            continue
        srcs = [producers.get(i) for i in n.input]
        direct = []
        for s in srcs:
            while s is not None and s.op_type in _EPILOGUE:
                s = producers.get(s.input[0])
            direct.append(s is not None and s.name in weighted)
        if any(direct):
            out[n.name] = [k for k, d in enumerate(direct) if not d] or [1]
    return out


def output_heads(model: onnx.ModelProto) -> list[str]:
    """Weighted ops (Conv/ConvTranspose/Gemm/MatMul) with no other weighted op between them and a graph output
    (rule 8 of the module docstring), in graph order."""
    producers = _producers(model)
    heads: set[str] = set()
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        t = stack.pop()
        if t in seen or t not in producers:
            continue
        seen.add(t)
        n = producers[t]
        if n.op_type in WEIGHTED_OPS:
            heads.add(n.name)
            continue
        stack.extend(i for i in n.input if i)
    return [n.name for n in model.graph.node if n.name in heads]


FP8_MIN_CHANNELS = 16  # ModelOpt's _MIN_CHANNELS_FP8: a Conv with this many input or output channels or fewer
FP8_MAX_TAPS = 32  # ModelOpt: "The filter size for FP8 conv kernels should be less than 32"


def fp8_float_convs(model: onnx.ModelProto) -> list[str]:
    """Conv nodes an FP8 quantization leaves float (rule 10): weight input channels (per group) or output channels
    at most :data:`FP8_MIN_CHANNELS`, or more than :data:`FP8_MAX_TAPS` filter taps; a Conv whose weight is not a
    constant too. In graph order."""
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    shapes[n.output[0]] = list(a.t.dims)
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        w = shapes.get(n.input[1]) if len(n.input) > 1 else None
        if w is None or len(w) < 3:
            out.append(n.name)
            continue
        if min(w[0], w[1]) <= FP8_MIN_CHANNELS or int(np.prod(w[2:])) > FP8_MAX_TAPS:
            out.append(n.name)
    return out


def _float_heads(model: onnx.ModelProto, nodes: Sequence[str], float_heads: bool) -> set[str]:
    """The heads rule 8 leaves float: none when ``nodes`` chooses, or when every weighted op is a head."""
    if not float_heads or nodes:
        return set()
    heads = set(output_heads(model))
    others = any(n.op_type in WEIGHTED_OPS and n.name not in heads for n in model.graph.node)
    return heads if others else set()


def quantization_targets(
    model: onnx.ModelProto, *, nodes: Sequence[str] = (), exclude: Sequence[str] = (), target: str = "tensorrt",
    float_heads: bool = False,
) -> dict[str, list[int]]:
    """``{node: [input indices]}`` that get Q/DQ: weighted ops' float inputs and residual Add inputs (for
    ``target="onnxruntime"`` both Add inputs, and average pools of quantized tensors); with ``float_heads`` the
    output heads stay float (rule 8)."""
    check_target(target)
    if target == "onnxruntime":
        from .qdq_ort import _ort_plan  # qdq_ort imports this module: import it on use

        return dict(_ort_plan(model, nodes, exclude, float_heads).targets)
    return _weighted_targets(model, nodes, exclude, target, float_heads)


def _weighted_targets(model: onnx.ModelProto, nodes: Sequence[str], exclude: Sequence[str],
                      target: str, float_heads: bool = False) -> dict[str, list[int]]:
    """Weighted ops' float inputs and residual Add inputs (one for TensorRT, both for ONNX Runtime)."""
    infos = _types(model)
    chosen = set(select_nodes(model, nodes, what="quantize")) if nodes else None
    excluded = set(select_nodes(model, exclude, what="exclude")) if exclude else set()
    excluded |= _float_heads(model, nodes, float_heads)
    weighted: dict[str, list[int]] = {}
    for n in model.graph.node:
        if n.op_type not in WEIGHTED_OPS or n.name in excluded or (chosen is not None and n.name not in chosen):
            continue
        idx = [k for k in range(min(len(n.input), 2)) if n.input[k] and _is_float(n.input[k], infos)]
        if len(idx) == 2:
            weighted[n.name] = idx
    # nothing left in the main graph because the user kept it all in high precision (a debugger's all-kept plan)
    # is not a model whose weighted ops all sit in bodies
    _check_bodies(model, bool(weighted) or any(n.op_type in WEIGHTED_OPS for n in model.graph.node))
    targets = dict(weighted)
    by_name: dict[str, onnx.NodeProto] = {}
    for n in model.graph.node:
        by_name.setdefault(n.name, n)  # the first node of a name, as a linear search would find
    for add, idx in _residual_adds(model, set(weighted)).items():
        if add in excluded or (chosen is not None and add not in chosen and nodes):
            continue
        add_node = by_name[add]
        if target == "onnxruntime":
            idx = [0, 1]
        if all(_is_float(add_node.input[k], infos) for k in idx):
            targets[add] = idx
    return targets


def _check_bodies(model: onnx.ModelProto, main_targets: bool) -> None:
    """Refuse a model whose weighted ops all sit inside If/Loop/Scan bodies (Q/DQ are placed in the main graph
    only); warn when some do while the main graph has others."""
    inside = [n for sub in iter_graphs(model.graph) if sub is not model.graph for n in sub.node
              if n.op_type in WEIGHTED_OPS]
    if not inside:
        return
    names = ", ".join(f"'{n.name}'" for n in inside[:3]) + (f" and {len(inside) - 3} more" if len(inside) > 3 else "")
    if not main_targets:
        raise EditError(
            f"every Conv/ConvTranspose/Gemm/MatMul of the model is inside an If/Loop/Scan body ({names}); the workbench "
            "places Q/DQ in the main graph only, so there is nothing to quantize",
            hint=_flatten_hint(model))
    warnings.warn(f"{len(inside)} weighted op(s) inside If/Loop/Scan bodies ({names}) stay float: Q/DQ are placed "
                  "in the main graph only", UserWarning, stacklevel=4)


def _flatten_hint(model: onnx.ModelProto) -> str:
    """The exact command that flattens the bodies into the main graph (check's freeze_input + fold repairs)."""
    from ..edits.repairs import find_repairs

    repairs = find_repairs(model)
    freeze = " ".join(f"--freeze {r.needs_value}={r.examples[0] if r.examples else 'VALUE'}" for r in repairs
                      if r.needs_value)
    shapes = " ".join(f"--shapes {k}:DIMS" for r in repairs for k in r.needs_shapes)
    command = " ".join(x for x in ("workbench check MODEL --repair", freeze or "--freeze NAME=VALUE", shapes,
                                   "-o flat.onnx") if x)
    return (f"flatten the model first: `{command}` freezes the input that selects the branch (the value you always "
            "run with) and folds the If so its branch joins the main graph"
            + (" (--shapes: one static shape per input, for Ifs on tensor shapes)" if shapes else "")
            + "; then quantize flat.onnx")


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes :func:`quantize_model` would quantize by default, in graph order."""
    targets = quantization_targets(model)
    return [n.name for n in model.graph.node if n.name in targets]


def activation_tensors(
    model: onnx.ModelProto, *, nodes: Sequence[str] = (), exclude: Sequence[str] = (), target: str = "tensorrt",
    float_heads: bool = False,
) -> list[str]:
    """Non-constant tensors whose scale calibration must find (the activations that get Q/DQ; for
    ``target="onnxruntime"`` also weighted ops' and residual Adds' outputs, and pass-through ops' outputs, which
    borrow their input's scale but need their own when a later ``exclude`` leaves that input float)."""
    check_target(target)
    if target == "onnxruntime":
        from .qdq_ort import _ort_plan  # qdq_ort imports this module: import it on use

        up = float32_compute(model)  # an fp16 model is placed in float32 (workbench.precision.upcast)
        plan = _ort_plan(up.model, nodes, exclude, float_heads)
        return [up.aliases.get(t, t) for t in plan.tensors if t not in plan.borrowed]
    consts = set(_constants(model))
    out: dict[str, None] = {}
    targets = quantization_targets(model, nodes=nodes, exclude=exclude, float_heads=float_heads)
    for n in model.graph.node:
        for k in targets.get(n.name, []):
            if n.input[k] not in consts:
                out[n.input[k]] = None
    return list(out)


def _quantize_weight(arr: np.ndarray, axis: int | None, dtype: str, scale_dtype: type[np.floating[Any]] = np.float32,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric scales of type ``scale_dtype`` (per-channel along ``axis``) and the quantized values (int8, or
    float32 for fp8)."""
    elem, qmax = _Q[dtype]
    if axis is None:
        amax = np.array(np.abs(arr).max(), dtype=np.float32)
        scale = np.maximum(amax / qmax, np.float32(1e-12)).astype(np.float32)
        bshape: tuple[int, ...] = ()
    else:
        red = tuple(d for d in range(arr.ndim) if d != axis)
        amax = np.abs(arr).max(axis=red).astype(np.float32)
        scale = np.maximum(amax / qmax, np.float32(1e-12)).astype(np.float32)
        bshape = tuple(arr.shape[axis] if d == axis else 1 for d in range(arr.ndim))
    scale = _scale_values(scale, scale_dtype)
    scaled = arr / scale.astype(np.float32).reshape(bshape)
    if dtype == "int8":
        q = np.clip(np.rint(scaled), -127, 127).astype(np.int8)
    else:
        q = np.clip(scaled, -qmax, qmax).astype(np.float32)
    return scale, q


def _q_initializer(values: np.ndarray, name: str, dtype: str) -> TensorProto:
    if dtype == "int8":
        return numpy_helper.from_array(values.astype(np.int8), name)
    return helper.make_tensor(name, TensorProto.FLOAT8E4M3FN, list(values.shape), values.ravel().tolist())


def _zero_point(name: str, dtype: str, shape: Sequence[int] = ()) -> TensorProto:
    elem, _ = _Q[dtype]
    n = int(np.prod(shape)) if shape else 1
    return helper.make_tensor(name, elem, list(shape), [0] * n)


def check_dtype(model: onnx.ModelProto, dtype: str) -> None:
    """Raise :class:`EditError` unless ``dtype`` is int8 or fp8 (a model older than opset 19 is converted for fp8 by
    :func:`quantize_model`, rule 7)."""
    if dtype not in _Q:
        raise EditError(f"unknown quantization dtype '{dtype}'", hint="use int8 or fp8")


def check_target(target: str) -> None:
    """Raise :class:`EditError` unless ``target`` is one of :data:`TARGETS`."""
    if target not in TARGETS:
        raise EditError(f"unknown Q/DQ placement target '{target}'", hint=f"use one of {list(TARGETS)}")


def _qdq_ready(model: onnx.ModelProto, per_channel: bool, dtype: str = "int8") -> tuple[onnx.ModelProto, bool]:
    """The model at an opset whose Q/DQ take the scales and ``dtype`` asked for (converted when older; warned). A
    model with no weighted op in its main graph gets no Q/DQ, so it is not converted."""
    if not any(n.op_type in WEIGHTED_OPS for n in model.graph.node):
        return model, per_channel
    model, per_channel, notes = _for_qdq(model, per_channel, fp8=dtype == "fp8")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    return model, per_channel


def quantize_model(
    model: onnx.ModelProto,
    scales: ScaleCache | Mapping[str, Any],
    *,
    dtype: str = "int8",
    exclude: Sequence[str] = (),
    nodes: Sequence[str] = (),
    per_channel: bool = True,
    target: str = "tensorrt",
    float_heads: bool = False,
) -> onnx.ModelProto:
    """A copy of ``model`` with Q/DQ placed where ``target`` fuses them (rules in the module docstring).

    ``scales``: a :class:`ScaleCache` or ``{tensor: amax}`` for every activation that gets Q/DQ
    (:func:`activation_tensors` with the same ``target``); for ``target="onnxruntime"`` a value may also be a
    ``(min, max)`` pair (a plain amax means the range [-amax, amax]). Weights are quantized from their own values.
    ``float_heads``: leave the output heads float (rule 8; :func:`output_heads`).
    A model older than opset 13 (no per-channel Q/DQ) is converted to opset 13 with onnx's version converter, with
    a warning; where that fails, weights are quantized per tensor (opset 10-12, warned) or the model is refused.
    """
    check_target(target)
    if target == "onnxruntime":
        if dtype != "int8":
            raise EditError(f"the onnxruntime placement quantizes to int8 (uint8 activations), not {dtype}",
                            hint="use dtype int8, or target tensorrt for fp8")
        check_dtype(model, dtype)
        up = float32_compute(model)  # ORT's integer kernels take float32 (workbench.precision.upcast)
        if up.note:
            warnings.warn(up.note, UserWarning, stacklevel=2)
        model, per_channel = _qdq_ready(up.model, per_channel)
        from .qdq_ort import _quantize_for_ort  # qdq_ort imports this module: import it on use

        return _quantize_for_ort(model, with_aliases(scales, up.aliases), exclude=exclude, nodes=nodes, per_channel=per_channel,
                                 float_heads=float_heads)
    check_dtype(model, dtype)
    model, per_channel = _qdq_ready(model, per_channel, dtype)
    if dtype == "fp8" and not nodes:  # rule 10
        exclude = (*exclude, *(n for n in fp8_float_convs(model) if n not in set(exclude)))
    model = _typed(model)
    infos = tensor_infos(model)
    amax = scales.amax() if isinstance(scales, ScaleCache) else {k: float(v) for k, v in scales.items()}
    elem, qmax = _Q[dtype]
    targets = quantization_targets(model, nodes=nodes, exclude=exclude, float_heads=float_heads)
    out, consumers, inits, names, producers, const_values = _working_copy(model)  # const_values: Constant weights
    g = out.graph
    dq_of: dict[str, str] = {}
    new_inits: list[TensorProto] = []
    act_nodes: dict[str, list[onnx.NodeProto]] = {}  # activation -> its Q, DQ (placed after the producer)
    weight_nodes: list[onnx.NodeProto] = []

    for node_name, idx in targets.items():
        node = names[node_name]
        for k in idx:
            t = node.input[k]
            if t in dq_of:
                node.input[k] = dq_of[t]
                continue
            if t in inits or t in const_values:
                arr = (numpy_helper.to_array(inits[t]) if t in inits else const_values[t]).astype(np.float32)
                axis = _weight_axis(node, k, arr.shape) if per_channel else None
                scale, q = _quantize_weight(arr, axis, dtype, _float_dtype(t, infos))
                users = consumers.get(t, [])
                shared = t not in inits or any(
                    u.name not in targets or t not in [u.input[j] for j in targets[u.name]] for u in users)
                dq_out = f"{t}__dq" if shared else t
                qname = f"{t}__{dtype}"
                new_inits += [_q_initializer(q, qname, dtype), numpy_helper.from_array(scale, f"{t}__scale"),
                              _zero_point(f"{t}__zero_point", dtype, scale.shape)]
                weight_nodes.append(helper.make_node("DequantizeLinear", [qname, f"{t}__scale", f"{t}__zero_point"],
                                                     [dq_out], name=f"{t}__DequantizeLinear", axis=axis))
                if not shared:
                    g.initializer.remove(inits.pop(t))
                dq_of[t] = dq_out
                node.input[k] = dq_out
                continue
            if t not in amax:
                raise CalibrationError(
                    f"no calibrated scale for tensor '{t}' (input {k} of node '{node_name}')",
                    hint=f"calibrate with this model (the scale cache must cover {t}), or exclude node '{node_name}'")
            a = float(amax[t])
            if not np.isfinite(a) or a <= 0:
                raise CalibrationError(
                    f"tensor '{t}' (input {k} of node '{node_name}') has calibrated amax {a}: its scale would be 0",
                    hint=f"exclude node '{node_name}' (--exclude {node_name}), use calibration data that activates "
                         f"it, or set an 'override' amax for '{t}' in the scale cache")
            scale_name, zp_name = f"{t}__scale", f"{t}__zero_point"
            new_inits += [numpy_helper.from_array(_scale_values(a / qmax, _float_dtype(t, infos)), scale_name),
                          _zero_point(zp_name, dtype)]
            q = helper.make_node("QuantizeLinear", [t, scale_name, zp_name], [f"{t}__q"], name=f"{t}__QuantizeLinear")
            dq = helper.make_node("DequantizeLinear", [f"{t}__q", scale_name, zp_name], [f"{t}__dq"],
                                  name=f"{t}__DequantizeLinear")
            act_nodes[t] = [q, dq]
            dq_of[t] = f"{t}__dq"
            node.input[k] = f"{t}__dq"
    g.initializer.extend(new_inits)
    ordered: list[onnx.NodeProto] = list(weight_nodes)
    for t in [i.name for i in g.input] + [c for c in act_nodes if c not in producers]:
        if t in act_nodes:
            ordered += act_nodes.pop(t)
    for n in g.node:
        ordered.append(n)
        for o in n.output:
            if o in act_nodes:
                ordered += act_nodes.pop(o)
    read = {i for n in ordered for i in n.input} | {o.name for o in g.output} | _subgraph_refs(g)
    ordered = [n for n in ordered if n.op_type != "Constant" or n.output[0] in read]  # weights moved to int8
    del g.node[:]
    g.node.extend(ordered)
    del g.value_info[:]
    _float16_bias_as_add(out)  # ONNX Runtime's bias pass breaks a float16 bias beside Q/DQ (see there)
    return _finish(out, "quantize_model")
