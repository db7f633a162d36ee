"""What the graph alone tells about TensorRT: dynamic inputs without a profile, ONNX Runtime-only integer ops and
Q/DQ placement, If nodes with a constant condition, custom-domain ops; each with a suggestion."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from ..backends.trt import ORT_INTEGER_OPS
from ..backends.trt_profiles import dynamic_inputs, format_spec, resolve_profiles
from ..precision import onnxruntime_only_qdq
from ..recipe import ShapeProfile
from .report import RECIPE as _RECIPE

__all__ = ["static_findings"]


def _const_names(model: onnx.ModelProto) -> set[str]:
    names = {i.name for i in model.graph.initializer}
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def static_findings(model: onnx.ModelProto, profiles: Sequence[ShapeProfile] = ()) -> tuple[list[dict[str, str]],
                                                                                               list[str]]:
    """What the graph alone tells: (unsupported nodes we can name, suggestions)."""
    unsupported: list[dict[str, str]] = []
    suggestions: list[str] = []
    given = {p.input for p in profiles}
    for name, info in dynamic_inputs(model).items():
        if name in given:
            continue
        resolved = resolve_profiles(model, [p for p in profiles if p.input != name])
        mine = next(p for p in resolved.profiles if p.input == name)
        shape = "x".join("?" if not isinstance(d, int) or d <= 0 else str(d) for d in info.shape or ())
        suggestions.append(
            f"input '{name}' has dynamic dims ({shape}) and no profile: the check used derived defaults; "
            f"give the shapes you will run, e.g. --shapes {format_spec(mine)}")
    integer = [n for n in model.graph.node if n.op_type in ORT_INTEGER_OPS]
    for n in integer:
        unsupported.append({"node": n.name, "op": n.op_type,
                            "reason": f"{n.op_type} is an ONNX Runtime integer op; TensorRT has no kernel for it"})
    if integer:
        suggestions.append(
            f"{len(integer)} ONNX Runtime integer op(s) ({', '.join(sorted({n.op_type for n in integer}))}: "
            f"{', '.join(n.name for n in integer[:5])}{'...' if len(integer) > 5 else ''}) must be turned back to float "
            f"first: apply the dequantize_integer_ops edit (`workbench edit MODEL recipe.json -o float.onnx` with "
            f"recipe.json = {_RECIPE % 'dequantize_integer_ops'}), then quantize to Q/DQ for TensorRT "
            f"(`workbench quantize float.onnx --calib DATA.npz -o qdq.onnx`)")
    ort_qdq = onnxruntime_only_qdq(model)
    for name, why in ort_qdq.items():
        op = next(n.op_type for n in model.graph.node if n.name == name)
        unsupported.append({"node": name, "op": op,
                            "reason": f"{why}; TensorRT takes symmetric int8/fp8 Q/DQ (zero point 0, float bias)"})
    if ort_qdq:
        suggestions.append(
            f"{len(ort_qdq)} Q/DQ node(s) ({', '.join(list(ort_qdq)[:3])}{'...' if len(ort_qdq) > 3 else ''}) follow "
            "ONNX Runtime's CPU placement (asymmetric uint8 activations, int32 biases), which TensorRT does not take: "
            "quantize the FP32 model for TensorRT instead (`workbench quantize MODEL --calib DATA.npz`, "
            "target tensorrt is the default)")
    consts = _const_names(model)
    const_ifs = [n for n in model.graph.node if n.op_type == "If" and n.input and n.input[0] in consts]
    if const_ifs:
        suggestions.append(
            f"If node(s) {', '.join(repr(n.name) for n in const_ifs)} have a constant condition: fold them with the "
            f"fold_constant_if edit (recipe {_RECIPE % 'fold_constant_if'}) so TensorRT sees a plain graph")
    custom = sorted({(n.domain, n.op_type) for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    for domain, op in custom:
        suggestions.append(f"op {op} from domain '{domain}' is not standard ONNX: TensorRT needs a plugin for it, "
                           f"or replace it with standard ops (replace_node edit)")
    return unsupported, suggestions


