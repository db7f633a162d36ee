"""Precision as graph edits: Cast nodes for fp16/bf16 regions, Q/DQ nodes for int8/fp8.

TensorRT 11 and TensorRT-RTX build strongly typed networks: the precision of every layer is what the ONNX
graph says, so this module writes the precision *into the graph* and never sets builder flags.

FP16 / BF16 (:func:`convert_precision`)
    The chosen nodes compute in the low type. A float32 tensor ``T`` read by a converted node is cast once
    to ``T__fp16`` (or ``T__bf16``); a converted node that produced ``T`` now produces ``T__fp16`` and a Cast
    back to float32 recreates ``T`` only where a float32 consumer or a graph output needs it. So the float32
    side always keeps the original name (reference and candidate tensors join by name) and adjacent casts
    merge: one Cast per tensor and direction, none between two converted nodes. Initializers read only by
    converted nodes are stored in the low type. :func:`precision_guards` flags ops that overflow or lose too
    much in fp16 (Exp/Pow, sum-like reductions, LayerNorm/Softmax statistics, constants outside the fp16
    range); with ``guard=True`` they stay float32 unless named explicitly in ``nodes``.

INT8 / FP8 (:func:`quantize_model`) -- placement rules and where they come from
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
    7. FP8 (float8e4m3fn) Q/DQ needs ONNX opset >= 19 (QuantizeLinear-19); older models raise an error
       instead of being silently upgraded.

    Q/DQ nodes keep the original tensor names on the full-precision side: the producer still writes ``T``,
    ``Q`` writes ``T__q`` and ``DQ`` writes ``T__dq``, which the quantized consumers read. A weight ``W``
    becomes the initializer ``W__int8`` (``W__fp8``) with ``W__scale``, and its DequantizeLinear writes ``W``
    again (``W__dq`` when a float consumer still reads the original).

INT8 for ONNX Runtime's CPU provider (:func:`quantize_model` with ``target="onnxruntime"``)
    ONNX Runtime cannot turn the TensorRT placement into integer kernels (a Conv whose output is float stays a
    float Conv between Q/DQ pairs: slower than FP32). Its rules, paraphrased from the ONNX Runtime docs "Quantize
    ONNX Models" (https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html: QDQ format,
    data types and the U8S8 recommendation for x86 CPUs) and "Graph Optimizations in ONNX Runtime"
    (https://onnxruntime.ai/docs/performance/model-optimizations/graph-optimizations.html): its QDQ selectors turn
    ``DQ -> op -> Q`` groups into QLinearConv, QGemm, QLinearMatMul, QLinearAdd; a Relu before a Q is removed when
    the zero point is the range minimum (a Clip too, when the Q's range lies within the Clip's);
    MaxPool/Flatten/Reshape/Transpose between a DQ and a Q of the same scale and zero point run on the 8-bit tensor. Checked against ONNX Runtime 1.32's optimized graphs
    (``SessionOptions.optimized_model_filepath``, tests/test_precision_ort_target.py):

    1. Activations are uint8, asymmetric: scale = (hi - lo) / 255 and zero point = round(-lo / scale), where
       [lo, hi] is the calibrated [min, max] clipped to the method's threshold (or the override) and widened to
       contain 0 so that 0 (padding) is exact. A Relu output has lo = 0, hence zero point 0, which is what lets
       ONNX Runtime drop the Relu. Weights stay int8, symmetric, per output channel (rule 4 above): the "u8s8"
       kernels. A Conv/Gemm bias becomes int32 with scale = input scale x weight scale, as QLinearConv takes it.
    2. Q/DQ go on the inputs *and* the output of every weighted op, so consecutive weighted ops exchange uint8
       tensors and each ``DQ -> op -> Q`` group fuses. The output Q goes after a following single-consumer
       Relu or Clip with minimum 0 (ReLU6: ORT removes both before such a Q), and BatchNormalization (fold it
       first, ``FuseBatchNorm`` / the CLI's default, or the Conv cannot fuse). Every reader of a quantized tensor reads the dequantized one (a Conv whose output is also read in
       float does not fuse), except excluded nodes and weighted ops / residual Adds left in float.
    3. Residual Adds (rule 3's) get Q/DQ on both inputs and on their output (after the Relu that follows), so
       they run as QLinearAdd.
    4. A pass-through op (MaxPool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Identity) whose input is
       quantized gets an output Q/DQ with its input's scale and zero point (no calibration of its own).
    5. A graph output gets no output Q: Gemm/MatMul then run as integer ops with a float output (QGemm,
       MatMulIntegerToFloat); a Conv producing a graph output stays float.
    6. int8 only (ONNX Runtime's CPU provider has no fp8 kernels).

    :func:`activation_tensors` with ``target="onnxruntime"`` lists the tensors this placement calibrates (inputs and
    outputs; a superset of the TensorRT placement's); pass them to ``calibrate(..., tensors=...)``. Names follow
    the convention above.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import CalibrationError, EditError, ModelError, RecipeError
from .fsio import atomic_write
from .graph import infer_shapes, tensor_infos
from .recipe import ConvertPrecision, Edit, Quantize

__all__ = [
    "PRECISIONS",
    "TARGETS",
    "WEIGHTED_OPS",
    "ScaleCache",
    "TensorStats",
    "precision_guards",
    "select_nodes",
    "plan_conversion",
    "convert_precision",
    "quantizable_nodes",
    "quantization_targets",
    "activation_tensors",
    "quantize_model",
    "check_dtype",
    "check_target",
    "latest_scales",
    "apply_precision_edit",
    "node_precisions",
    "weight_bytes",
]

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FP16_MAX = 65504.0
FP16_TINY = 2.0**-24  # smallest positive fp16 (subnormal): smaller nonzero constants flush to zero

_LOW = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
_Q = {"int8": (TensorProto.INT8, 127.0), "fp8": (TensorProto.FLOAT8E4M3FN, 448.0)}
# Ops with a single data type for their float tensors that are safe to run in fp16/bf16.
_CONVERTIBLE = {
    "Abs", "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Conv", "ConvTranspose", "Div",
    "Dropout", "Einsum", "Elu", "Erf", "Exp", "Expand", "Flatten", "Gather", "GatherElements", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization",
    "LayerNormalization", "LeakyRelu", "Log", "MatMul", "Max", "MaxPool", "Min", "Mish", "Mul", "Neg", "Pad",
    "Pow", "PRelu", "Reciprocal", "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "Selu", "Sigmoid", "Sin", "Cos",
    "Slice", "Softmax", "LogSoftmax", "Softplus", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile",
    "Transpose", "Unsqueeze", "Upsample", "Where", "DepthToSpace", "SpaceToDepth", "Mean",
}
# Float inputs that must stay float32 whatever the node's precision (input index sets).
_FLOAT32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
# Pointwise ops TensorRT fuses into a weighted layer's epilogue (between it and a residual Add).
_EPILOGUE = {"BatchNormalization", "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Identity"}
# ONNX Runtime placement: ops between a weighted op and its output Q (ORT folds BatchNorm only before
# quantization; Relu or Clip(min=0) before a Q whose zero point is the uint8 minimum is removed), and ops that run
# on uint8 when the DQ before and the Q after share one scale and zero point (ORT drops the pair).
_ORT_EPILOGUE = {"BatchNormalization", "Relu", "Clip"}
_PASS_THROUGH = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
TARGETS = ("tensorrt", "onnxruntime")
_SUM_REDUCTIONS = {"ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd"}


def _low_name(tensor: str, precision: str) -> str:
    return f"{tensor}__{precision}"


# --- selection ---------------------------------------------------------------------------------------


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


# --- fp16 guards -------------------------------------------------------------------------------------


def precision_guards(model: onnx.ModelProto) -> list[dict[str, str]]:
    """Nodes that risk overflow or large error in fp16: ``[{node, op, reason}]`` in graph order."""
    consts = _constants(model)
    producers = _producers(model)
    consumers = _consumers(model)
    out = []
    flagged: set[str] = set()
    for n in model.graph.node:
        reason = ""
        if n.op_type == "Exp":
            reason = "exp overflows fp16 for inputs above ~11"
        elif n.op_type == "Pow":
            reason = "pow can overflow fp16 (x**2 overflows above 256)"
        elif n.op_type in _SUM_REDUCTIONS:
            reason = f"{n.op_type} accumulates over many elements and can overflow fp16"
        elif n.op_type in ("LayerNormalization", "Softmax", "LogSoftmax"):
            reason = f"{n.op_type} statistics (mean/variance or sum of exponentials) lose precision in fp16"
        elif n.op_type == "ReduceMean":
            src = producers.get(n.input[0]) if n.input else None
            users = consumers.get(n.output[0], [])
            if (src is not None and src.op_type in ("Pow", "Mul")) or any(u.op_type == "Sub" for u in users):
                reason = "mean/variance of a decomposed normalisation loses precision in fp16"
        if not reason:
            for i in n.input:
                arr = consts.get(i)
                if arr is None or arr.dtype.kind != "f" or arr.size == 0:
                    continue
                a = np.abs(arr[np.isfinite(arr)])
                if a.size and a.max() > FP16_MAX:
                    reason = f"constant '{i}' holds {a.max():.3g}, beyond the fp16 maximum 65504"
                    break
                tiny = a[(a > 0) & (a < FP16_TINY)]
                if tiny.size:
                    reason = f"constant '{i}' holds {tiny.min():.3g}, which becomes 0 in fp16"
                    break
        if not reason and n.op_type in ("Add", "Sqrt", "Reciprocal"):
            # a variance computed in fp32 overflows again when cast to fp16 for the eps-add / square root
            src = producers.get(n.input[0]) if n.input else None
            hops = 0
            while src is not None and src.op_type in ("Add", "Sqrt") and hops < 2 and src.name not in flagged:
                src = producers.get(src.input[0]) if src.input else None
                hops += 1
            if src is not None and src.name in flagged and src.op_type in ("ReduceMean", "Add", "Sqrt",
                                                                         *_SUM_REDUCTIONS):
                reason = f"reads the statistic of '{src.name}', which can exceed the fp16 range"
        if reason:
            flagged.add(n.name)
            out.append({"node": n.name, "op": n.op_type, "reason": reason})
    return out


# --- fp16 / bf16 conversion --------------------------------------------------------------------------


def _schema_allows(op: str, opset: int, precision: str) -> bool:
    """Whether the op's schema at ``opset`` accepts the low type for its float tensors."""
    want = "tensor(float16)" if precision == "fp16" else "tensor(bfloat16)"
    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except Exception:
        return False
    params = {i.type_str for i in schema.inputs}
    for tc in schema.type_constraints:
        if tc.type_param_str in params and "tensor(float)" in tc.allowed_type_strs:
            return want in tc.allowed_type_strs
    return False


def plan_conversion(
    model: onnx.ModelProto,
    precision: str = "fp16",
    *,
    keep: Sequence[str] = (),
    nodes: Sequence[str] = (),
    guard: bool = True,
) -> dict[str, dict[str, str]]:
    """Which nodes will run in ``precision`` and why the others will not: ``{node: {precision, reason}}``."""
    if precision not in _LOW:
        raise EditError(f"precision '{precision}' cannot be set by Cast nodes",
                        hint="use fp16 or bf16 here; int8/fp8 are set by quantize_model")
    model = _typed(model)
    infos = tensor_infos(model)
    explicit = set(select_nodes(model, nodes, what="convert")) if nodes else None
    kept = set(select_nodes(model, keep, what="keep")) if keep else set()
    guards = {g["node"]: g["reason"] for g in precision_guards(model)} if guard else {}
    opset = _opset(model)
    named = set(nodes)  # a guarded node named exactly (not by op type or pattern) is converted anyway
    plan: dict[str, dict[str, str]] = {}
    for n in model.graph.node:
        floats = [t for t in list(n.input) + list(n.output) if t and _is_float32(t, infos)]
        if n.op_type not in _CONVERTIBLE or not floats or n.domain not in ("", "ai.onnx"):
            plan[n.name] = {"precision": "fp32", "reason": "not a float op that Cast can convert"}
        elif not _schema_allows(n.op_type, opset, precision):
            plan[n.name] = {"precision": "fp32",
                            "reason": f"ONNX opset {opset} defines no {precision} {n.op_type}"}
        elif explicit is not None and n.name not in explicit:
            plan[n.name] = {"precision": "fp32", "reason": "not selected"}
        elif n.name in kept:
            plan[n.name] = {"precision": "fp32", "reason": "kept by the user"}
        elif n.name in guards and n.name not in named:
            plan[n.name] = {"precision": "fp32", "reason": f"guard: {guards[n.name]}"}
        else:
            plan[n.name] = {"precision": precision, "reason": ""}
    return plan


def convert_precision(
    model: onnx.ModelProto,
    precision: str = "fp16",
    *,
    keep: Sequence[str] = (),
    nodes: Sequence[str] = (),
    keep_io_types: bool = True,
    guard: bool = True,
) -> onnx.ModelProto:
    """A copy of ``model`` whose selected nodes compute in fp16/bf16 through Cast nodes (see module doc).

    ``nodes``: selectors of nodes to convert (empty: every eligible node); ``keep``: selectors kept fp32;
    ``guard``: keep flagged ops (:func:`precision_guards`) fp32 unless named exactly in ``nodes``;
    ``keep_io_types=False`` makes graph inputs/outputs next to converted nodes low precision too.
    """
    model = _typed(model)
    plan = plan_conversion(model, precision, keep=keep, nodes=nodes, guard=guard)
    low = {name for name, p in plan.items() if p["precision"] == precision}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not low:
        return out
    g = out.graph
    infos = tensor_infos(model)
    elem = _LOW[precision]
    consumers = _consumers(model)
    graph_outputs = {o.name for o in g.output} | _subgraph_refs(g)  # both need the float32 name
    inits = {i.name: i for i in g.initializer}
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.output}
    low_of: dict[str, str] = {}  # float32 tensor -> its low-precision twin
    cast_after: list[onnx.NodeProto] = []

    def low_tensor(t: str) -> str:
        """The low-precision twin of float32 tensor ``t``, made on first use."""
        if t in low_of:
            return low_of[t]
        name = _low_name(t, precision)
        users = consumers.get(t, [])
        only_low = all(u.name in low for u in users) and t not in graph_outputs
        if t in inits and only_low and precision == "fp16":
            init = inits[t]
            with np.errstate(over="ignore"):  # out-of-range constants are what the guards flag
                arr = numpy_helper.to_array(init).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(arr, t))
            low_of[t] = t
            return t
        if t in inits:
            arr = numpy_helper.to_array(inits[t])
            g.initializer.append(_low_initializer(arr, name, precision))
            low_of[t] = name
            return name
        if t in const_nodes and only_low and precision == "fp16":
            node = const_nodes[t]
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            low_of[t] = t
            return t
        cast_after.append(helper.make_node("Cast", [t], [name], name=f"{t}__cast_{precision}", to=elem))
        low_of[t] = name
        return name

    # 1. converted producers write the low twin; a Cast back recreates the float32 name where it is needed
    back: list[onnx.NodeProto] = []
    for n in g.node:
        if n.name not in low:
            continue
        for k, o in enumerate(n.output):
            if not o or not _is_float32(o, infos):
                continue
            name = _low_name(o, precision)
            n.output[k] = name
            low_of[o] = name
            users = consumers.get(o, [])
            if o in graph_outputs or any(u.name not in low for u in users):
                back.append(helper.make_node("Cast", [name], [o], name=f"{o}__cast_fp32", to=TensorProto.FLOAT))
    # 2. converted consumers read low twins
    for n in g.node:
        if n.name not in low:
            continue
        skip = _FLOAT32_INPUTS.get(n.op_type, set())
        for k, i in enumerate(n.input):
            if i and k not in skip and _is_float32(i, infos) and i not in (n.output):
                n.input[k] = low_tensor(i)
        if n.op_type == "Cast":  # pragma: no cover - Cast is not convertible
            continue
    # 3. assemble in topological order: casts right after their source
    produced_by_cast = {c.input[0]: c for c in cast_after}
    back_by_src = {c.input[0]: c for c in back}
    ordered: list[onnx.NodeProto] = []
    graph_inputs = {i.name for i in g.input}
    for t in graph_inputs:
        if t in produced_by_cast:
            ordered.append(produced_by_cast.pop(t))
    for n in g.node:
        ordered.append(n)
        for o in n.output:
            if o in back_by_src:
                c = back_by_src.pop(o)
                ordered.append(c)
                if c.output[0] in produced_by_cast:  # a float32 tensor recreated by a Cast back
                    ordered.append(produced_by_cast.pop(c.output[0]))
            if o in produced_by_cast:
                ordered.append(produced_by_cast.pop(o))
    # casts of initializers / constants (sources with no producing node in the walk)
    ordered = list(produced_by_cast.values()) + ordered
    del g.node[:]
    g.node.extend(ordered)
    _drop_unused_initializers(out)
    if not keep_io_types:
        _lower_io(out, precision)
    del g.value_info[:]
    return _finish(out, "convert_precision")


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


def _low_initializer(arr: np.ndarray, name: str, precision: str) -> TensorProto:
    if precision == "fp16":
        with np.errstate(over="ignore"):
            return numpy_helper.from_array(arr.astype(np.float16), name)
    bits = (np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32) + 0x7FFF
            + ((np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32) >> 16) & 1)) >> 16
    t = TensorProto(name=name, data_type=TensorProto.BFLOAT16, dims=list(arr.shape))
    t.raw_data = bits.astype(np.uint16).tobytes()
    return t


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _lower_io(model: onnx.ModelProto, precision: str) -> None:
    """Remove boundary casts: inputs read only by a Cast to low, outputs made only by a Cast to fp32."""
    g = model.graph
    elem = _LOW[precision]
    consumers = _consumers(model)
    drop: set[str] = set()
    rename: dict[str, str] = {}
    for inp in g.input:
        users = consumers.get(inp.name, [])
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT and users and all(
                u.op_type == "Cast" and u.name.endswith(f"__cast_{precision}") for u in users):
            for u in users:
                drop.add(u.name)
                rename[u.output[0]] = inp.name
            inp.type.tensor_type.elem_type = elem
    producers = _producers(model)
    for out in g.output:
        p = producers.get(out.name)
        if p is not None and p.name.endswith("__cast_fp32") and not consumers.get(out.name):
            drop.add(p.name)
            rename[p.input[0]] = out.name
            out.type.tensor_type.elem_type = elem
    keep = [n for n in g.node if n.name not in drop]
    for n in keep:
        for k, i in enumerate(n.input):
            n.input[k] = rename.get(i, i)
        for k, o in enumerate(n.output):
            n.output[k] = rename.get(o, o)
    del g.node[:]
    g.node.extend(keep)


def _finish(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    for o in model.graph.output:
        if o.type.tensor_type.elem_type == 0:
            o.ClearField("type")
    try:
        model = infer_shapes(model, where=where)
        onnx.checker.check_model(model)
    except (ModelError, onnx.checker.ValidationError) as exc:
        raise EditError(f"{where} produced an invalid graph: {str(exc).splitlines()[0]}",
                        hint="keep the node named in the message in fp32 (keep=...) and try again") from exc
    return model


# --- quantization ------------------------------------------------------------------------------------


@dataclass
class TensorStats:
    """Calibration statistics of one tensor: range, the threshold each method chose, a histogram summary."""

    amax: float
    min: float = 0.0
    max: float = 0.0
    thresholds: dict[str, float] = field(default_factory=dict)
    hist: list[int] = field(default_factory=list)
    hist_max: float = 0.0
    override: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"amax": self.amax, "min": self.min, "max": self.max, "thresholds": dict(self.thresholds),
                "hist": list(self.hist), "hist_max": self.hist_max, "override": self.override}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorStats:
        return cls(amax=float(d["amax"]), min=float(d.get("min", 0.0)), max=float(d.get("max", 0.0)),
                   thresholds={k: float(v) for k, v in dict(d.get("thresholds") or {}).items()},
                   hist=[int(c) for c in d.get("hist") or []], hist_max=float(d.get("hist_max", 0.0)),
                   override=None if d.get("override") is None else float(d["override"]))

    @property
    def value(self) -> float:
        """The amax used for the scale: the hand override when set, else the method's."""
        return self.amax if self.override is None else self.override


@dataclass
class ScaleCache:
    """Per-tensor calibration results, keyed by model digest + data digest + method; JSON, editable by hand.

    Saved as ``<dir>/scales/<digest>.json`` where ``digest`` is the sha256 of the canonical JSON. To change a
    scale by hand, set ``"override"`` of a tensor (an amax, in the tensor's units) and save again.
    """

    tensors: dict[str, TensorStats]
    method: str = "entropy"
    model_digest: str = ""
    data_digest: str = ""
    samples: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def amax(self) -> dict[str, float]:
        return {k: v.value for k, v in self.tensors.items()}

    @property
    def key(self) -> str:
        """What a cached result is looked up by: model + data + method and its settings."""
        text = json.dumps([self.model_digest, self.data_digest, self.method, self.settings], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def with_method(self, method: str) -> ScaleCache:
        """The same statistics with each tensor's amax taken from another method's threshold."""
        tensors = {}
        for k, v in self.tensors.items():
            if method not in v.thresholds:
                raise CalibrationError(f"the scale cache has no '{method}' threshold for tensor '{k}'",
                                       hint=f"calibrate again with method='{method}'")
            tensors[k] = TensorStats(**{**v.__dict__, "amax": v.thresholds[method], "override": None})
        return ScaleCache(tensors, method, self.model_digest, self.data_digest, self.samples,
                          dict(self.settings), list(self.warnings), self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": 1, "kind": "scale_cache", "method": self.method,
                "model_digest": self.model_digest, "data_digest": self.data_digest, "samples": self.samples,
                "settings": dict(self.settings), "warnings": list(self.warnings), "seconds": self.seconds,
                "tensors": {k: v.to_dict() for k, v in sorted(self.tensors.items())}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    def digest(self) -> str:
        d = self.to_dict()
        d.pop("seconds")
        return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def save(self, directory: str | os.PathLike[str]) -> str:
        """Write ``<directory>/scales/<digest>.json`` atomically; return the digest."""
        digest = self.digest()
        atomic_write(Path(directory) / "scales" / f"{digest}.json", self.to_json())
        return digest

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "scale cache") -> ScaleCache:
        try:
            tensors = {str(k): TensorStats.from_dict(v) for k, v in dict(d["tensors"]).items()}
            return cls(tensors=tensors, method=str(d.get("method", "")), model_digest=str(d.get("model_digest", "")),
                       data_digest=str(d.get("data_digest", "")), samples=int(d.get("samples", 0)),
                       settings=dict(d.get("settings") or {}), warnings=list(d.get("warnings") or []),
                       seconds=float(d.get("seconds", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{where} is not a scale cache ({type(exc).__name__}: {exc})",
                                   hint="each tensor needs at least an 'amax' number; recalibrate to rewrite it") from exc

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScaleCache:
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"scale cache not found: {path}",
                                   hint="calibrate again (workbench quantize ... or the Calibrate tab)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"cannot read the scale cache {path}: {exc}",
                                   hint="fix the JSON by hand or calibrate again") from exc
        return cls.from_dict(data, where=str(path))


def latest_scales(cache_dir: str | os.PathLike[str], model_digest: str | None = None) -> tuple[str, ScaleCache] | None:
    """The newest scale cache in ``<cache_dir>/scales`` (for ``model_digest`` when given): (digest, cache)."""
    folder = Path(cache_dir) / "scales"
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        if path.name == "index.json":
            continue
        try:
            cache = ScaleCache.load(path)
        except CalibrationError:
            continue
        if model_digest is None or cache.model_digest == model_digest:
            return path.stem, cache
    return None


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


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


def quantization_targets(
    model: onnx.ModelProto, *, nodes: Sequence[str] = (), exclude: Sequence[str] = (), target: str = "tensorrt"
) -> dict[str, list[int]]:
    """``{node: [input indices]}`` that get Q/DQ: weighted ops' float inputs and residual Add inputs (for
    ``target="onnxruntime"`` both Add inputs)."""
    check_target(target)
    infos = tensor_infos(_typed(model))
    chosen = set(select_nodes(model, nodes, what="quantize")) if nodes else None
    excluded = set(select_nodes(model, exclude, what="exclude")) if exclude else set()
    weighted: dict[str, list[int]] = {}
    for n in model.graph.node:
        if n.op_type not in WEIGHTED_OPS or n.name in excluded or (chosen is not None and n.name not in chosen):
            continue
        idx = [k for k in range(min(len(n.input), 2)) if n.input[k] and _is_float32(n.input[k], infos)]
        if len(idx) == 2:
            weighted[n.name] = idx
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
        if all(_is_float32(add_node.input[k], infos) for k in idx):
            targets[add] = idx
    return targets


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes :func:`quantize_model` would quantize by default, in graph order."""
    targets = quantization_targets(model)
    return [n.name for n in model.graph.node if n.name in targets]


def activation_tensors(
    model: onnx.ModelProto, *, nodes: Sequence[str] = (), exclude: Sequence[str] = (), target: str = "tensorrt"
) -> list[str]:
    """Non-constant tensors whose scale calibration must find (the activations that get Q/DQ; for
    ``target="onnxruntime"`` also weighted ops' and residual Adds' outputs, and pass-through ops' outputs, which
    borrow their input's scale but need their own when a later ``exclude`` leaves that input float)."""
    check_target(target)
    if target == "onnxruntime":
        return list(_ort_plan(model, nodes, exclude).tensors)
    consts = set(_constants(model))
    out: dict[str, None] = {}
    targets = quantization_targets(model, nodes=nodes, exclude=exclude)
    for n in model.graph.node:
        for k in targets.get(n.name, []):
            if n.input[k] not in consts:
                out[n.input[k]] = None
    return list(out)


def _quantize_weight(arr: np.ndarray, axis: int | None, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric scales (per-channel along ``axis``) and the quantized values (int8, or float32 for fp8)."""
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
    scaled = arr / scale.reshape(bshape)
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
    """Raise :class:`EditError` unless ``dtype`` is int8, or fp8 on a model with opset >= 19."""
    if dtype not in _Q:
        raise EditError(f"unknown quantization dtype '{dtype}'", hint="use int8 or fp8")
    if dtype == "fp8" and _opset(model) < 19:
        raise EditError(
            f"fp8 Q/DQ needs ONNX opset 19 or newer; this model is opset {_opset(model)}",
            hint="use dtype int8, or upgrade the model first: onnx.version_converter.convert_version(model, 19) "
                 "(check the converted model's accuracy), then quantize again")


def check_target(target: str) -> None:
    """Raise :class:`EditError` unless ``target`` is one of :data:`TARGETS`."""
    if target not in TARGETS:
        raise EditError(f"unknown Q/DQ placement target '{target}'", hint=f"use one of {list(TARGETS)}")


def quantize_model(
    model: onnx.ModelProto,
    scales: ScaleCache | Mapping[str, Any],
    *,
    dtype: str = "int8",
    exclude: Sequence[str] = (),
    nodes: Sequence[str] = (),
    per_channel: bool = True,
    target: str = "tensorrt",
) -> onnx.ModelProto:
    """A copy of ``model`` with Q/DQ placed where ``target`` fuses them (rules in the module docstring).

    ``scales``: a :class:`ScaleCache` or ``{tensor: amax}`` for every activation that gets Q/DQ
    (:func:`activation_tensors` with the same ``target``); for ``target="onnxruntime"`` a value may also be a
    ``(min, max)`` pair (a plain amax means the range [-amax, amax]). Weights are quantized from their own values.
    """
    check_target(target)
    if target == "onnxruntime":
        if dtype != "int8":
            raise EditError(f"the onnxruntime placement quantizes to int8 (uint8 activations), not {dtype}",
                            hint="use dtype int8, or target tensorrt for fp8")
        check_dtype(model, dtype)
        return _quantize_for_ort(model, scales, exclude=exclude, nodes=nodes, per_channel=per_channel)
    check_dtype(model, dtype)
    model = _typed(model)
    amax = scales.amax() if isinstance(scales, ScaleCache) else {k: float(v) for k, v in scales.items()}
    elem, qmax = _Q[dtype]
    targets = quantization_targets(model, nodes=nodes, exclude=exclude)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consumers = _consumers(out)
    inits = {i.name: i for i in g.initializer}
    names = {n.name: n for n in g.node}
    producers = _producers(out)
    const_values = {k: v for k, v in _constants(out).items() if k not in inits}  # Constant-node weights
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
                scale, q = _quantize_weight(arr, axis, dtype)
                users = consumers.get(t, [])
                shared = t not in inits or any(
                    u.name not in targets or t not in [u.input[j] for j in targets[u.name]] for u in users)
                dq_out = f"{t}__dq" if shared else t
                qname = f"{t}__{dtype}"
                new_inits += [_q_initializer(q, qname, dtype), numpy_helper.from_array(scale, f"{t}__scale"),
                              _zero_point(f"{t}__zero_point", dtype, scale.shape)]
                attrs = {"axis": axis} if axis is not None else {}
                weight_nodes.append(helper.make_node("DequantizeLinear", [qname, f"{t}__scale", f"{t}__zero_point"],
                                                     [dq_out], name=f"{t}__DequantizeLinear", **attrs))
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
            new_inits += [numpy_helper.from_array(np.array(a / qmax, dtype=np.float32), scale_name),
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
    return _finish(out, "quantize_model")


# --- ONNX Runtime (CPU) placement ---------------------------------------------------------------------


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


def _clips_at_zero(node: onnx.NodeProto, consts: Mapping[str, np.ndarray]) -> bool:
    """A Clip whose minimum is the constant 0 (ReLU6 and the like): a uint8 Q with zero point 0 replaces it."""
    if len(node.input) > 1 and node.input[1]:
        low = consts.get(node.input[1])
        return low is not None and low.size == 1 and float(low.reshape(-1)[0]) == 0.0
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return float(attrs.get("min", -np.inf)) == 0.0  # opset < 11: min is an attribute


def _output_point(node: onnx.NodeProto, consumers: Mapping[str, list[onnx.NodeProto]],
                  graph_outputs: set[str], consts: Mapping[str, np.ndarray]) -> str:
    """The tensor after ``node`` where its output Q goes: past a chain of single-consumer BatchNorm, Relu and
    Clip(min=0)."""
    out = node.output[0]
    while out not in graph_outputs:
        users = consumers.get(out, [])
        if len(users) != 1 or users[0].op_type not in _ORT_EPILOGUE or (
                users[0].op_type == "Clip" and not _clips_at_zero(users[0], consts)):
            break
        out = users[0].output[0]
    return out


def _ort_plan(model: onnx.ModelProto, nodes: Sequence[str], exclude: Sequence[str]) -> _OrtPlan:
    model = _typed(model)
    infos = tensor_infos(model)
    targets = quantization_targets(model, nodes=nodes, exclude=exclude, target="onnxruntime")
    every = quantization_targets(model, target="onnxruntime")
    excluded = set(select_nodes(model, exclude, what="exclude")) if exclude else set()
    const_values = _constants(model)
    consts = set(const_values)
    consumers = _consumers(model)
    producers = _producers(model)
    graph_outputs = {o.name for o in model.graph.output} | _subgraph_refs(model.graph)
    wanted: set[str] = set()
    for n in model.graph.node:
        if n.name not in targets:
            continue
        wanted.update(n.input[k] for k in targets[n.name] if n.input[k] not in consts)
        out = _output_point(n, consumers, graph_outputs, const_values)
        if out not in graph_outputs and _is_float32(out, infos):
            wanted.add(out)
    order = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output if o]
    tensors: dict[str, str] = {}
    for t in order:
        if t not in wanted:
            continue
        src = producers.get(t)
        if src is not None and src.op_type in _PASS_THROUGH and src.input and src.input[0] in tensors:
            tensors[t] = tensors[src.input[0]]  # same scale and zero point: ORT runs the op on uint8
        else:
            tensors[t] = t
    return _OrtPlan(targets, tensors, frozenset((set(every) - set(targets)) | excluded))


def _asymmetric_ranges(scales: ScaleCache | Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """``{tensor: (lo, hi)}``: the calibrated min/max clipped to the method's threshold (or override)."""
    out: dict[str, tuple[float, float]] = {}
    if isinstance(scales, ScaleCache):
        for k, v in scales.tensors.items():
            th = float(v.value)
            if v.min == 0.0 and v.max == 0.0:  # no range recorded (hand-made stats): symmetric
                out[k] = (-th, th)
            else:
                out[k] = (max(float(v.min), -th), min(float(v.max), th))
        return out
    for k, v in scales.items():
        if isinstance(v, (tuple, list)):
            out[k] = (float(v[0]), float(v[1]))
        else:
            out[k] = (-float(v), float(v))
    return out


def _uint8_params(lo: float, hi: float) -> tuple[float, int]:
    """Scale and uint8 zero point for the range [lo, hi] (widened to contain 0, so 0 is exact)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32((hi - lo) / 255.0))
    return scale, int(np.clip(np.rint(-lo / scale), 0, 255))


def _quantize_for_ort(model: onnx.ModelProto, scales: ScaleCache | Mapping[str, Any], *, exclude: Sequence[str],
                      nodes: Sequence[str], per_channel: bool) -> onnx.ModelProto:
    """The ``target="onnxruntime"`` placement (module docstring, "ONNX Runtime (CPU) placement")."""
    model = _typed(model)
    plan = _ort_plan(model, nodes, exclude)
    ranges = _asymmetric_ranges(scales)
    consumers = _consumers(model)
    unfused = [u.name for n in model.graph.node if n.name in plan.targets and n.op_type in ("Conv", "ConvTranspose")
               for u in consumers.get(n.output[0], []) if u.op_type == "BatchNormalization"]
    if unfused:
        warnings.warn(f"BatchNormalization {unfused[:3]} follow quantized convolutions: ONNX Runtime cannot fuse "
                      "those convolutions into QLinearConv; fold them first (FuseBatchNorm edit; workbench quantize "
                      "does by default)", UserWarning, stacklevel=3)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consumers = _consumers(out)
    inits = {i.name: i for i in g.initializer}
    names = {n.name: n for n in g.node}
    producers = _producers(out)
    const_values = {k: v for k, v in _constants(out).items() if k not in inits}
    reader_of = {}  # activation -> a quantized node reading it (for messages)
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
            if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 0:
                raise CalibrationError(
                    f"tensor '{t}' has calibrated range [{lo}, {hi}]: its scale would be 0",
                    hint="use calibration data that activates it, set an 'override' amax for it in the scale cache, "
                         "or exclude the node that reads it")
            scale, zp = _uint8_params(lo, hi)
            new_inits += [numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{t}__scale"),
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
            if t not in inits and t not in const_values:
                continue
            if t in dq_of:
                node.input[k] = dq_of[t]
                continue
            arr = (numpy_helper.to_array(inits[t]) if t in inits else const_values[t]).astype(np.float32)
            axis = _weight_axis(node, k, arr.shape) if per_channel else None
            scale, q = _quantize_weight(arr, axis, "int8")
            weight_scale = scale if k == 1 else None
            shared = t not in inits or any(u.name not in plan.targets for u in consumers.get(t, []))
            dq_out = f"{t}__dq" if shared else t
            new_inits += [_q_initializer(q, f"{t}__int8", "int8"), numpy_helper.from_array(scale, f"{t}__scale"),
                          _zero_point(f"{t}__zero_point", "int8", scale.shape)]
            attrs = {"axis": axis} if axis is not None else {}
            weight_nodes.append(helper.make_node("DequantizeLinear", [f"{t}__int8", f"{t}__scale", f"{t}__zero_point"],
                                                 [dq_out], name=f"{t}__DequantizeLinear", **attrs))
            if not shared:
                g.initializer.remove(inits.pop(t))
            dq_of[t] = node.input[k] = dq_out
        bias = node.input[2] if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 else ""
        x = node.input[0]
        if bias in inits and weight_scale is not None and x in params and bias not in dq_of \
                and all(u is node for u in consumers.get(bias, [])):
            # int32 bias with scale = input scale * weight scale: what ORT's QLinearConv/QGemm take
            b = numpy_helper.to_array(inits[bias]).astype(np.float64).reshape(-1)
            bscale = (np.float64(params[x][2]) * weight_scale.astype(np.float64)).reshape(-1)
            if bscale.size == 1:
                bscale = np.full(b.shape, bscale[0])
            if bscale.shape == b.shape and np.all(bscale > 0):
                bq = np.clip(np.rint(b / bscale), -(2**31) + 1, 2**31 - 1).astype(np.int32)
                g.initializer.remove(inits.pop(bias))
                new_inits += [numpy_helper.from_array(bq, f"{bias}__int32"),
                              numpy_helper.from_array(bscale.astype(np.float32), f"{bias}__scale"),
                              numpy_helper.from_array(np.zeros(b.shape, np.int32), f"{bias}__zero_point")]
                weight_nodes.append(helper.make_node(
                    "DequantizeLinear", [f"{bias}__int32", f"{bias}__scale", f"{bias}__zero_point"], [bias],
                    name=f"{bias}__DequantizeLinear", axis=0))
                dq_of[bias] = bias
    for n in g.node:  # every reader but the float ones takes the dequantized tensor
        if n.name in plan.float_readers:
            continue
        for k, i in enumerate(n.input):
            if i in act_nodes:
                n.input[k] = f"{i}__dq"
    g.initializer.extend(new_inits)
    ordered: list[onnx.NodeProto] = list(weight_nodes)
    for t in [i.name for i in g.input]:
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


# --- recipe edits ------------------------------------------------------------------------------------


def apply_precision_edit(
    model: onnx.ModelProto, edit: Edit, *, cache_dir: str | os.PathLike[str] | None = None
) -> onnx.ModelProto:
    """Apply a :class:`~workbench.recipe.ConvertPrecision` or :class:`~workbench.recipe.Quantize` edit."""
    if isinstance(edit, ConvertPrecision):
        return convert_precision(model, edit.precision, keep=edit.keep, nodes=edit.nodes,
                                 keep_io_types=edit.keep_io_types, guard=edit.guard)
    if isinstance(edit, Quantize):
        if not edit.scales:
            raise RecipeError("the quantize edit names no scale cache ('scales' is empty)",
                              hint="calibrate first (workbench quantize --recipe-out, or the Calibrate tab)")
        if cache_dir is None:
            raise RecipeError(f"the quantize edit needs scale cache {edit.scales} but no cache folder was given",
                              hint="open the recipe with its cache folder (Session(..., cache_dir=...))")
        cache = ScaleCache.load(Path(cache_dir) / "scales" / f"{edit.scales}.json")
        if edit.method and edit.method != cache.method:  # the cache holds every method's threshold
            cache = cache.with_method(edit.method)
        return quantize_model(model, cache, dtype=edit.dtype, exclude=edit.exclude, nodes=edit.nodes,
                              per_channel=edit.per_channel, target=edit.target)
    raise TypeError(f"apply_precision_edit handles convert_precision and quantize, not {edit.kind}")


# --- summaries ---------------------------------------------------------------------------------------

_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "fp8": 1}


def node_precisions(model: onnx.ModelProto) -> dict[str, str]:
    """The precision each compute node of a (converted/quantized) model runs in, read from the graph."""
    infos = tensor_infos(model)
    producers = _producers(model)
    out: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast"):
            continue
        kind = "fp32"
        for i in n.input:
            p = producers.get(i)
            if p is not None and p.op_type == "DequantizeLinear":
                src = infos.get(p.input[0])
                dt = src.dtype if src else ""
                kind = "fp8" if "float8" in dt else "int8"
                break
            info = infos.get(i)
            if info is not None and info.dtype in ("float16", "bfloat16"):
                kind = "fp16" if info.dtype == "float16" else "bf16"
        out[n.name] = kind
    return out


def weight_bytes(model: onnx.ModelProto, plan: Mapping[str, str] | None = None) -> int:
    """Estimated weight memory: each float initializer at the precision of its consumers (``plan``: node ->
    precision; default: as stored)."""
    consumers = _consumers(model)
    total = 0
    for init in model.graph.initializer:
        n = int(np.prod(init.dims, dtype=np.int64))
        if plan is None or init.data_type != TensorProto.FLOAT:
            size = {TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.INT8: 1, TensorProto.UINT8: 1,
                    TensorProto.FLOAT8E4M3FN: 1, TensorProto.INT64: 8, TensorProto.DOUBLE: 8}.get(init.data_type, 4)
            total += n * size
            continue
        precs = [plan.get(u.name, "fp32") for u in consumers.get(init.name, [])] or ["fp32"]
        total += n * max(_BYTES.get(p, 4) for p in precs)
    return total
