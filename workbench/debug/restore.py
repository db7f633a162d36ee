"""Which layers of a candidate run below FP32, and the candidate with some of them back in FP32 (or the FP32
reference with only some in low precision): the variants the sensitivity ranking and the plan search measure."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import helper

from ..errors import EditError
from ..graph import all_nodes, prune_unused, rename_reads, sort_nodes, subgraph_reads, tensor_infos

__all__ = ["Factory", "low_precision_layers", "restore_layers", "isolate_layers", "copy_model"]

#: ``factory(keep)``: the candidate with the ``keep`` nodes in high precision (e.g. re-quantized with them excluded)
Factory = Callable[[tuple[str, ...]], onnx.ModelProto]


def low_precision_layers(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> dict[str, str]:
    """{node: precision} for candidate nodes (also in the reference) that run below FP32, in graph order."""
    from ..precision import node_precisions

    ref_nodes = {n.name for n in reference.graph.node}
    return {n: p for n, p in node_precisions(candidate).items() if p != "fp32" and n in ref_nodes}


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``model``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def restore_layers(candidate: onnx.ModelProto, reference: onnx.ModelProto, nodes: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``candidate`` in which each named node is the reference's FP32 node again.

    The restored node reads the full-precision tensors (which Q/DQ and Cast insertion leave under their
    original names) and the reference's FP32 weights, and writes the reference's output names; the
    candidate's Q/DQ or Cast nodes that only served it disappear. Tensors read inside If/Loop/Scan bodies count
    as read, and a restored node's bodies read the same full-precision tensors as its inputs.
    """
    ref_nodes = {n.name: n for n in reference.graph.node}
    ref_inits = {i.name: i for i in reference.graph.initializer}
    out = copy_model(candidate)
    g = out.graph
    cand_inits = {i.name: i for i in g.initializer}
    infos = tensor_infos(candidate)
    ref_infos = tensor_infos(reference)
    ref_prod = {o: n for n in reference.graph.node for o in n.output if o}
    added: set[str] = set()
    for name in dict.fromkeys(nodes):
        rn = ref_nodes.get(name)
        idx = next((k for k, n in enumerate(g.node) if n.name == name), None)
        if rn is None or idx is None:
            where = "reference" if rn is None else "candidate"
            raise EditError(f"node '{name}' is not in the {where} model", hint="pick a node from the sensitivity table")
        produced = {o for n in g.node for o in n.output} | {i.name for i in g.input}
        cn = g.node[idx]
        new = onnx.NodeProto()
        new.CopyFrom(rn)
        extra: list[onnx.NodeProto] = []
        own = set(new.input)
        body_reads = sorted(t for t in subgraph_reads(new) if t not in own)  # outer tensors its bodies read
        proxy = helper.make_node("Identity", list(new.input) + body_reads, [], name="")
        for k, t in enumerate(proxy.input):
            if not t:
                continue
            if t in ref_inits:
                ci = cand_inits.get(t)
                if ci is None or ci.SerializeToString() != ref_inits[t].SerializeToString():
                    fp32 = f"{t}__fp32"
                    if fp32 not in added:
                        init = onnx.TensorProto()
                        init.CopyFrom(ref_inits[t])
                        init.name = fp32
                        g.initializer.append(init)
                        added.add(fp32)
                    proxy.input[k] = fp32
                continue
            if t in produced:
                ref_info, cand_info = ref_infos.get(t), infos.get(t)
                if ref_info is None or cand_info is None or ref_info.dtype == cand_info.dtype:
                    continue
                # the candidate computes ``t`` in another type (e.g. a Constant converted to fp16): read the
                # reference's own constant, else cast back to the reference's type
                fp32 = f"{t}__fp32"
                proxy.input[k] = fp32
                if fp32 in added:
                    continue
                added.add(fp32)
                producer = ref_prod.get(t)
                if producer is not None and producer.op_type == "Constant":
                    const = onnx.NodeProto()
                    const.CopyFrom(producer)
                    const.name, const.output[0] = f"{producer.name}__fp32", fp32
                    extra.append(const)
                else:
                    to = helper.np_dtype_to_tensor_dtype(np.dtype(ref_info.dtype))
                    extra.append(helper.make_node("Cast", [t], [fp32], name=f"{t}__restore_cast", to=to))
                continue
            if t not in ref_prod and t not in {i.name for i in reference.graph.input}:
                continue  # made inside the node's own bodies
            low = next((t + s for s in ("__fp16", "__bf16") if t + s in produced), None)
            if low is None:
                raise EditError(f"cannot restore node '{name}': its input tensor '{t}' is not in the candidate",
                                hint="the candidate renamed the full-precision tensor; restore it in the recipe "
                                     "(exclude/keep the node) instead")
            extra.append(helper.make_node("Cast", [low], [t], name=f"{t}__restore_cast", to=onnx.TensorProto.FLOAT))
        for k in range(len(new.input)):
            new.input[k] = proxy.input[k]
        renamed = {t: proxy.input[len(new.input) + j] for j, t in enumerate(body_reads)
                   if proxy.input[len(new.input) + j] != t}
        for body in (a.g for a in new.attribute if a.type == onnx.AttributeProto.GRAPH):
            rename_reads(body, renamed)
        for a in new.attribute:
            if a.type == onnx.AttributeProto.GRAPHS:
                for body in a.graphs:
                    rename_reads(body, renamed)
        ref_outs = [o for o in new.output]
        for k, o in enumerate(cn.output):
            read = (any(o in n.input or o in subgraph_reads(n) for n in g.node if n is not cn)
                    or o in {x.name for x in g.output})
            if o and k < len(ref_outs) and o != ref_outs[k] and read:
                info = infos.get(o)
                to = helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype)) if info and info.dtype != "unknown" \
                    else onnx.TensorProto.FLOAT
                extra.append(helper.make_node("Cast", [ref_outs[k]], [o], name=f"{o}__restore_cast", to=to))
        others = [n for n in g.node if n is not cn and any(o in ref_outs for o in n.output)]
        for n in others:
            g.node.remove(n)
        idx = next(k for k, n in enumerate(g.node) if n is cn)
        g.node.remove(cn)
        for j, n in enumerate([*extra, new]):
            g.node.insert(idx + j, n)
    sort_nodes(g)  # bodies' outer reads are dependencies too
    prune_unused(g)
    del g.value_info[:]
    return out


def isolate_layers(candidate: onnx.ModelProto, reference: onnx.ModelProto, nodes: Iterable[str]) -> onnx.ModelProto:
    """The reference with only the named nodes running as in the candidate (everything else FP32).

    Every other low-precision node of the candidate is restored (:func:`restore_layers`); restored weights keep
    the reference's initializer names where nothing else uses them, so the result differs from the reference
    only at the named nodes (which lets :func:`sensitivity` run just their downstream part).
    """
    nodes = list(dict.fromkeys(nodes))
    low = low_precision_layers(reference, candidate)
    missing = [n for n in nodes if n not in low]
    if missing:
        raise EditError(f"node(s) {missing} do not run in low precision in the candidate",
                        hint=f"choose among {list(low)[:12]}")
    out = restore_layers(candidate, reference, [n for n in low if n not in nodes])
    g = out.graph
    ref_inits = {i.name for i in reference.graph.initializer}
    used = {o for n in all_nodes(g) for o in n.output} | {i.name for i in g.input} | {i.name for i in g.initializer}
    back = {i.name: i.name[:-len("__fp32")] for i in g.initializer
            if i.name.endswith("__fp32") and i.name[:-len("__fp32")] in ref_inits
            and i.name[:-len("__fp32")] not in used}
    for i in g.initializer:
        if i.name in back:
            i.name = back[i.name]
    rename_reads(g, back)  # If/Loop/Scan bodies read them by name too
    return out

