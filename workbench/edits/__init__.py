"""Graph edits: one pure function per recipe edit kind, applied with onnx-graphsurgeon.

:func:`apply_edit` never mutates its input: it imports the model into a graphsurgeon graph, edits that,
exports a new ModelProto (the one copy per edit), re-infers shapes and runs the ONNX checker. A clean-up with
nothing to do (no Constant to fold, no BatchNormalization, no Identity) returns its input, without a copy. Errors
naming a missing node/tensor or a broken graph are :class:`~workbench.errors.EditError`.
Precision edits (ConvertPrecision, Quantize) live in :mod:`workbench.precision`; the Session routes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import onnx

from .. import recipe as R
from ..errors import EditError
from . import direct
from ._gs import InvalidEditResult, finish, to_graph, to_model
from .cleanup import fold_constant_if, fold_constants, fuse_batchnorm, remove_dead_nodes, remove_identity
from .idle import idle
from .integer_ops import dequantize_integer_ops
from .repairs import freeze_input, split_shared_dims
from .surgery import extract, remove_node

__all__ = ["apply_edit", "apply_edits", "node_diff", "describe", "GRAPH_EDITS", "DIRECT_EDITS", "WHOLE_GRAPH_EDITS",
           "InvalidEditResult"]

_Handler = Callable[[Any, Any], Any]

GRAPH_EDITS: dict[type[R.Edit], _Handler] = {
    R.FoldConstants: lambda g, e: fold_constants(g),
    R.FuseBatchNorm: lambda g, e: fuse_batchnorm(g),
    R.RemoveIdentity: lambda g, e: remove_identity(g),
    R.RemoveDeadNodes: lambda g, e: remove_dead_nodes(g),
    R.FoldConstantIf: lambda g, e: fold_constant_if(g),
    R.DequantizeIntegerOps: lambda g, e: dequantize_integer_ops(g),
    R.RemoveNode: lambda g, e: remove_node(g, e.node, drop_outputs=e.drop_outputs),
    R.ExtractSubgraph: lambda g, e: extract(g, e.inputs, e.outputs),
}

# edits made on a copy of the proto directly (no graphsurgeon import/export)
DIRECT_EDITS: dict[type[R.Edit], _Handler] = {
    R.BypassNode: lambda m, e: direct.bypass_node(m, e.node, e.input_index),
    R.ReplaceNode: lambda m, e: direct.replace_node(m, e.node, e.op, e.attributes),
    R.RenameNode: lambda m, e: direct.rename_node(m, e.node, e.new_name),
    R.AddOutputs: lambda m, e: direct.add_outputs(m, e.tensors),
    R.InsertNode: lambda m, e: direct.insert_node(m, e.tensor, e.op, e.name, e.attributes),
    R.SetShapes: lambda m, e: direct.set_shapes(m, e.shapes),
    R.RenameTensor: lambda m, e: direct.rename_tensor(m, e.tensor, e.new_name),
    R.SplitSharedDims: lambda m, e: split_shared_dims(m, e.inputs),
    R.FreezeInput: lambda m, e: freeze_input(m, e.input, e.value),
}


# edits that take no node, tensor or value chosen by the user: an invalid result is our bug (an internal error)
WHOLE_GRAPH_EDITS: frozenset[type[R.Edit]] = frozenset({
    R.FoldConstants, R.FuseBatchNorm, R.RemoveIdentity, R.RemoveDeadNodes, R.FoldConstantIf, R.DequantizeIntegerOps,
    R.SplitSharedDims,
})


def describe(edit: R.Edit) -> str:
    """A short human label for an edit, e.g. ``bypass_node 'relu_3'``."""
    fields = {k: v for k, v in edit.to_dict().items() if k != "kind" and v not in ((), [], {}, "", None)}
    args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{edit.kind}({args})" if args else edit.kind


def apply_edit(model: onnx.ModelProto, edit: R.Edit, *, cache_dir: str | os.PathLike[str] | None = None
               ) -> onnx.ModelProto:
    """Return a new model with ``edit`` applied, validated by the ONNX checker and shape inference; ``model``
    itself where a whole-graph clean-up has nothing to do on it (:func:`~workbench.edits.idle.idle`)."""
    if idle(model, edit):
        return model
    direct_handler = DIRECT_EDITS.get(type(edit))
    if direct_handler is not None:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        direct_handler(copy, edit)
        return finish(copy, describe(edit), model, targeted=type(edit) not in WHOLE_GRAPH_EDITS)
    handler = GRAPH_EDITS.get(type(edit))
    if handler is None:
        if isinstance(edit, (R.ConvertPrecision, R.Quantize)):
            raise EditError(f"{edit.kind} is a precision edit, not a graph edit",
                            hint="apply it through Session.apply or workbench.precision.apply_precision_edit")
        raise EditError(f"no graph edit for kind {edit.kind!r}", hint=f"known kinds: {sorted(R.EDIT_KINDS)}")
    graph = to_graph(model)
    handler(graph, edit)
    return finish(to_model(graph, model), describe(edit), model, targeted=type(edit) not in WHOLE_GRAPH_EDITS)


def apply_edits(model: onnx.ModelProto, edits: list[R.Edit] | tuple[R.Edit, ...], *,
                cache_dir: str | os.PathLike[str] | None = None) -> onnx.ModelProto:
    """Apply graph edits in order (precision edits are not handled here)."""
    for edit in edits:
        model = apply_edit(model, edit, cache_dir=cache_dir)
    return model


def node_diff(before: onnx.ModelProto, after: onnx.ModelProto) -> dict[str, list[str]]:
    """Node names ``added``, ``removed`` and ``changed`` (same name, different op/inputs/outputs/attributes)."""
    a = {n.name: n for n in before.graph.node}
    b = {n.name: n for n in after.graph.node}
    changed = [name for name in b if name in a and
               a[name].SerializeToString(deterministic=True) != b[name].SerializeToString(deterministic=True)]
    return {
        "added": [name for name in b if name not in a],
        "removed": [name for name in a if name not in b],
        "changed": changed,
    }
