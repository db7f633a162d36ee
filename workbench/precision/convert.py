"""FP16 / BF16 as Cast nodes: :func:`convert_precision`, planned by :func:`plan_conversion`.

The chosen nodes compute in the low type. A float32 tensor ``T`` read by a converted node is cast once
to ``T__fp16`` (or ``T__bf16``); a converted node that produced ``T`` now produces ``T__fp16`` and a Cast
back to float32 recreates ``T`` only where a float32 consumer or a graph output needs it. So the float32
side always keeps the original name (reference and candidate tensors join by name) and adjacent casts
merge: one Cast per tensor and direction, none between two converted nodes. Initializers read only by
converted nodes are stored in the low type. :func:`precision_guards` flags ops that overflow or lose too
much in fp16 (Exp/Pow, sum-like reductions, LayerNorm/Softmax statistics, constants outside the fp16
range); with ``guard=True`` they stay float32 unless named explicitly in ``nodes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..choices import FP16_MAX
from ..errors import EditError
from ._common import (
    _constants,
    _consumers,
    _finish,
    _is_float32,
    _opset,
    _producers,
    _subgraph_refs,
    _types,
    select_nodes,
)
from .scales import ScaleCache, TensorStats

Ranges = Union[ScaleCache, Mapping[str, Union[float, Sequence[float], TensorStats]]]  # noqa: UP007
"""Measured activation ranges: a ScaleCache, or ``{tensor: amax | (min, max) | TensorStats}``."""

__all__ = ["FP16_MAX", "FP16_TINY", "Ranges", "precision_guards", "plan_conversion", "convert_precision",
           "float_tensors", "range_guards", "selection_notes"]

FP16_TINY = 2.0**-24  # smallest positive fp16 (subnormal): smaller nonzero constants flush to zero

_LOW = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
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
# Ops whose output carries their inputs' magnitudes (no squashing): an out-of-range value stays out of range.
_CARRIES_VALUES = {"Add", "Sub", "Mul", "Div", "Neg", "Where", "Expand", "Reshape", "Unsqueeze", "Squeeze", "Cast",
                   "Concat", "Transpose", "Slice", "Gather", "Tile", "Identity", "Max", "Min", "Flatten", "Sum"}
_SUM_REDUCTIONS = {"ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd"}


def _low_name(tensor: str, precision: str) -> str:
    return f"{tensor}__{precision}"


# --- fp16 guards -------------------------------------------------------------------------------------


def precision_guards(model: onnx.ModelProto) -> list[dict[str, str]]:
    """Nodes that risk overflow or large error in fp16: ``[{node, op, reason}]`` in graph order."""
    consts = _constants(model)
    producers = _producers(model)
    consumers = _consumers(model)
    out = []
    flagged: set[str] = set()
    huge: set[str] = set()  # tensors computed from constants beyond the fp16 range
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
        if not reason:
            # a value computed from an out-of-range constant (an attention mask times float32's minimum) stays out
            # of range through ops that carry values, so their readers would see inf in fp16
            src_name = next((i for i in n.input if i in huge), None)
            if src_name is not None:
                reason = f"reads '{src_name}', computed from a constant beyond the fp16 range"
        if "beyond the fp16" in reason and n.op_type in _CARRIES_VALUES:
            huge.update(o for o in n.output if o)
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
    ranges: Ranges | None = None,
) -> dict[str, dict[str, str]]:
    """Which nodes will run in ``precision`` and why the others will not: ``{node: {precision, reason}}``.

    ``ranges``: activation ranges from a reference run (a :class:`ScaleCache` from ``calibrate(model, data,
    tensors=float_tensors(model))``, or ``{tensor: amax | (min, max) | TensorStats}``); a node reading or writing a
    tensor whose magnitude exceeds the fp16 maximum stays float32 (as ModelOpt's AutoCast does), unless named
    exactly in ``nodes``.
    """
    if precision not in _LOW:
        raise EditError(f"precision '{precision}' cannot be set by Cast nodes",
                        hint="use fp16 or bf16 here; int8/fp8 are set by quantize_model")
    infos = _types(model)
    explicit = set(select_nodes(model, nodes, what="convert")) if nodes else None
    kept = set(select_nodes(model, keep, what="keep")) if keep else set()
    guards = {g["node"]: g["reason"] for g in precision_guards(model)} if guard else {}
    if ranges is not None and precision == "fp16":
        for name, reason in range_guards(model, ranges).items():
            guards.setdefault(name, reason)
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


def _magnitudes(ranges: Ranges) -> dict[str, float]:
    """``{tensor: largest magnitude}`` from a ScaleCache or ``{tensor: amax | (min, max) | TensorStats}``."""
    items = ranges.tensors.items() if isinstance(ranges, ScaleCache) else ranges.items()
    out: dict[str, float] = {}
    for name, v in items:
        if isinstance(v, TensorStats):
            out[name] = max(abs(v.min), abs(v.max), abs(v.amax))
        elif isinstance(v, Sequence):
            out[name] = max(abs(float(x)) for x in v)
        else:
            out[name] = abs(float(v))
    return out


def range_guards(model: onnx.ModelProto, ranges: Ranges, *,
                 limit: float = FP16_MAX) -> dict[str, str]:
    """``{node: reason}`` for the nodes that read or write a tensor whose measured magnitude is beyond ``limit``
    (default the fp16 maximum; ModelOpt's AutoCast keeps a margin with ``data_max``)."""
    big = {t: m for t, m in _magnitudes(ranges).items() if not m <= limit}  # NaN/inf count as out of range
    out: dict[str, str] = {}
    for n in model.graph.node:
        for t in (*n.output, *n.input):
            if t in big:
                beyond = "the fp16 maximum 65504" if limit == FP16_MAX else f"the limit {limit:.6g}"
                out[n.name] = f"tensor '{t}' reaches {big[t]:.3g} on the reference run, beyond {beyond}"
                break
    return out


# Ops whose output is a discrete choice among float inputs: any rounding of those inputs can flip it
_SELECTIONS = {"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "ArgMax", "ArgMin", "TopK",
               "NonMaxSuppression"}


def selection_notes(model: onnx.ModelProto, low: set[str]) -> list[str]:
    """One line per graph output that a discrete selection (Equal, Greater, ArgMax, TopK...) of float tensors
    decides, where a node in ``low`` (converted) computes what the selection reads (main graph).

    fp16 rounding anywhere upstream flips such choices, and no node kept fp32 near the selection prevents it: on
    M-LSD (``scores = sigmoid * (MaxPool3x3(sigmoid) == sigmoid)``) the continuous outputs stay within rel L2 0.04
    while 11 % of the local maxima move (scores rel L2 0.14); keeping the selection and the layers just before it
    fp32 changed nothing (corpus F7)."""
    producers, consumers = _producers(model), _consumers(model)
    outputs = {o.name for o in model.graph.output}
    notes = []
    for n in model.graph.node:
        if n.op_type not in _SELECTIONS:
            continue
        upstream, stack, seen = False, [i for i in n.input if i], set()
        while stack and not upstream:
            t = stack.pop()
            p = producers.get(t)
            if p is None or p.name in seen:
                continue
            seen.add(p.name)
            upstream = p.name in low
            stack.extend(i for i in p.input if i)
        if not upstream:
            continue
        reached, stack, seen_t = [], list(n.output), set()
        while stack:
            t = stack.pop()
            if t in seen_t:
                continue
            seen_t.add(t)
            if t in outputs:
                reached.append(t)
            stack.extend(o for c in consumers.get(t, []) for o in c.output)
        for out in sorted(reached):
            notes.append(f"output '{out}' is decided by {n.op_type} '{n.name}' on tensors computed in fp16: rounding "
                         "anywhere before it flips that choice, so judge this output with a task metric (compare "
                         "--metric), not elementwise error; to keep the choice exact, keep every node before it fp32 "
                         "(nodes kept near it alone do not)")
    return notes


def float_tensors(model: onnx.ModelProto) -> list[str]:
    """The float32 graph inputs and the float32 tensors nodes compute (main graph): what to calibrate for
    ``convert_precision(ranges=...)``."""
    infos = _types(model)
    inits = {i.name for i in model.graph.initializer}  # IR < 4 lists initializers among the inputs
    inputs = [i.name for i in model.graph.input
              if i.type.tensor_type.elem_type == TensorProto.FLOAT and i.name not in inits]
    return list(dict.fromkeys([*inputs, *(o for n in model.graph.node if n.op_type != "Constant"
                                          for o in n.output if o and _is_float32(o, infos))]))


def convert_precision(
    model: onnx.ModelProto,
    precision: str = "fp16",
    *,
    keep: Sequence[str] = (),
    nodes: Sequence[str] = (),
    keep_io_types: bool = True,
    guard: bool = True,
    ranges: Ranges | None = None,
) -> onnx.ModelProto:
    """A copy of ``model`` whose selected nodes compute in fp16/bf16 through Cast nodes (see module doc); ``model``
    itself when no node converts.

    ``nodes``: selectors of nodes to convert (empty: every eligible node); ``keep``: selectors kept fp32;
    ``guard``: keep flagged ops (:func:`precision_guards`) fp32 unless named exactly in ``nodes``;
    ``keep_io_types=False`` makes graph inputs/outputs next to converted nodes low precision too;
    ``ranges``: measured activation ranges; nodes touching a tensor beyond the fp16 range stay float32
    (see :func:`plan_conversion`).
    """
    plan = plan_conversion(model, precision, keep=keep, nodes=nodes, guard=guard, ranges=ranges)
    low = {name for name, p in plan.items() if p["precision"] == precision}
    if not low:  # nothing converts: no copy (a 194 MB tree ensemble is 1.15 GB in memory)
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    infos = _types(model)
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
    """Drop main-graph initializers nothing reads; a tensor read only inside If/Loop/Scan bodies is read."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    used |= _subgraph_refs(model.graph)
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
