"""onnx-graphsurgeon round trip shared by the edits: import, export keeping model fields, validate."""

from __future__ import annotations

from typing import NoReturn, TypeGuard

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import EditError
from ..graph import copy_inferred_subgraphs, sort_nodes, weightless_skeleton
from ..graph.names import unique_name
from ..graph.save import copy_fields

__all__ = ["to_graph", "to_model", "finish", "node_by_name", "tensor_by_name", "unique_name", "InvalidEditResult"]

_DEFAULT_DOMAINS = ("", "ai.onnx")


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    """A graphsurgeon graph of ``model`` (the proto is only read).

    A model with If/Loop/Scan bodies is imported from a copy: graphsurgeon keeps the body protos it imported
    and its constant folding wrote into them, changing the caller's model.
    Long attribute lists (a tree ensemble's node tables: 4.8 M elements each in a 194 MB LightGBM model) become
    numpy arrays: graphsurgeon would hold them as Python lists (1.6 GB for that model) and format them whole into
    its debug log lines (a 324 M-character string per message, even with the log off).
    """
    tables = {(i, a.name): a for i, n in enumerate(model.graph.node) if n.op_type != "Constant"
              for a in n.attribute if _long_list(a)}
    if tables:
        model = _without_tables(model)
    elif _has_subgraphs(model.graph):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    graph = gs.import_onnx(model)
    for (i, name), attr in tables.items():
        graph.nodes[i].attrs[name] = _table(attr)
    return graph


_LIST_DTYPES = {onnx.AttributeProto.FLOATS: ("floats", np.float32), onnx.AttributeProto.INTS: ("ints", np.int64),
                onnx.AttributeProto.STRINGS: ("strings", np.bytes_)}
_LONG_LIST = 4096


def _long_list(attr: onnx.AttributeProto) -> bool:
    field = _LIST_DTYPES.get(attr.type)
    return field is not None and len(getattr(attr, field[0])) > _LONG_LIST


def _table(attr: onnx.AttributeProto) -> np.ndarray:
    """A long list attribute as a numpy array (float32, int64 or bytes), read from the proto without a list."""
    field, dtype = _LIST_DTYPES[attr.type]
    values = getattr(attr, field)
    if dtype is np.bytes_:
        return np.array(values, dtype=np.bytes_)
    return np.fromiter(values, dtype=dtype, count=len(values))


def _is_table(value: object) -> TypeGuard[np.ndarray]:
    return isinstance(value, np.ndarray) and value.ndim == 1 and value.size > _LONG_LIST and value.dtype.kind in "fiuSU"


def _table_attribute(attr: onnx.AttributeProto, name: str, values: np.ndarray) -> None:
    """Make ``attr`` hold a 1-D array: FLOATS (as float32), INTS or STRINGS by its dtype, without a Python list."""
    attr.name = name
    if values.dtype.kind == "f":
        attr.type = onnx.AttributeProto.FLOATS
        attr.floats.extend(values.astype(np.float32, copy=False))
    elif values.dtype.kind in "iu":
        attr.type = onnx.AttributeProto.INTS
        attr.ints.extend(values.astype(np.int64, copy=False))
    else:
        attr.type = onnx.AttributeProto.STRINGS
        attr.strings.extend(values if values.dtype.kind == "S" else np.char.encode(values, "utf-8"))


def _without_tables(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose nodes' long list attributes are left empty (their arrays are set after import)."""
    out = onnx.ModelProto()
    copy_fields(model, out, skip="graph")
    copy_fields(model.graph, out.graph, skip="node")
    for node in model.graph.node:
        if node.op_type == "Constant" or not any(_long_list(a) for a in node.attribute):
            out.graph.node.append(node)
            continue
        light = out.graph.node.add()
        copy_fields(node, light, skip="attribute")
        for a in node.attribute:
            if _long_list(a):
                light.attribute.add(name=a.name, type=a.type)
            else:
                light.attribute.append(a)
    return out


def to_model(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` keeping ``like``'s model-level fields (IR version, opsets, producer, metadata).

    Long 1-D numpy attributes (the tables :func:`to_graph` makes) are written into the exported nodes straight from
    the arrays: graphsurgeon's export would turn each into a Python list and copy the node's attributes twice.
    """
    taken: dict[int, dict[str, object]] = {}
    for i, node in enumerate(graph.nodes):
        if any(_is_table(v) for v in node.attrs.values()):
            taken[i] = dict(node.attrs)
            node.attrs = {k: v for k, v in node.attrs.items() if not _is_table(v)}
    try:
        out = gs.export_onnx(graph, do_type_check=False)
    finally:
        for i, attrs in taken.items():
            graph.nodes[i].attrs = attrs
    for i, attrs in taken.items():
        node = out.graph.node[i]
        exported = {a.name: onnx.AttributeProto.FromString(a.SerializeToString()) for a in node.attribute}
        del node.attribute[:]
        for k, v in attrs.items():  # each table written once, in place (a table built apart is copied in again)
            if _is_table(v):
                _table_attribute(node.attribute.add(), k, v)
            elif k in exported:
                node.attribute.append(exported[k])
    out.ir_version = like.ir_version
    out.producer_name, out.producer_version = like.producer_name, like.producer_version
    out.domain, out.model_version, out.doc_string = like.domain, like.model_version, like.doc_string
    del out.metadata_props[:]
    out.metadata_props.extend(like.metadata_props)
    versions = {o.domain: o.version for o in like.opset_import}
    for o in out.opset_import:
        versions.setdefault(o.domain, o.version)
    del out.opset_import[:]
    for domain, version in versions.items():
        out.opset_import.append(onnx.helper.make_opsetid(domain, version))
    if not out.functions and like.functions:
        out.functions.extend(like.functions)
    return out


def _has_subgraphs(g: onnx.GraphProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute)


class InvalidEditResult(RuntimeError):
    """A whole-graph edit (no node or tensor chosen by the user) wrote an invalid graph from a valid one: our bug,
    reported as an internal error (with the checker's message), never as the user's choice."""


def finish(model: onnx.ModelProto, where: str, before: onnx.ModelProto | None = None, *,
           targeted: bool = True) -> onnx.ModelProto:
    """Validate an edited model in place and return it: types and shapes re-inferred from scratch (stale
    ones dropped), then the ONNX checker; both run on a weightless skeleton.

    An invalid result of a ``targeted`` edit (one on a node, tensor or input the user chose) is an
    :class:`EditError` naming it; of a whole-graph edit (``targeted=False``: fold_constants, fuse_batchnorm, the
    repairs...) it is :class:`InvalidEditResult`, an internal error, unless ``before`` fails the same validation
    (then the model itself is at fault: an EditError saying so).

    Shapes of tensors made by custom-domain ops (which inference cannot redo) are kept, and so is the declared
    type of a graph output whose shape inference cannot give (an If whose branches differ in rank): ONNX
    requires a shape on every graph output (``before``: the model before the edit, whose declared output types
    count too). Nodes are put in topological order first.
    """
    g = model.graph
    sort_nodes(g)
    custom = {o for n in g.node if n.domain not in _DEFAULT_DOMAINS for o in n.output}
    keep = [vi for vi in g.value_info if vi.name in custom]
    del g.value_info[:]
    g.value_info.extend(keep)
    old_out = {o.name: onnx.ValueInfoProto.FromString(o.SerializeToString()) for o in g.output}
    if before is not None:  # graphsurgeon may export an output without the shape the model declared
        for o in before.graph.output:
            mine = old_out.get(o.name)
            if mine is not None and ((not mine.type.tensor_type.HasField("shape") and o.type.tensor_type.HasField("shape"))
                                     or (not _complete(mine.type) and _complete(o.type))):
                old_out[o.name] = o
    for o in g.output:
        if o.name not in custom:
            o.ClearField("type")
    skel = weightless_skeleton(model, where)
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, strict_mode=False, data_prop=True)
    except Exception as exc:
        message = f"{where} leaves a graph whose shapes cannot be inferred: {_first_line(exc)}"
        _blame(message, where, before, targeted, exc,
               hint="undo this edit; the nodes it touches no longer fit their operators' input shapes")
    ig = inferred.graph
    for o in ig.output:
        old = old_out.get(o.name)
        if old is None or not old.HasField("type"):
            continue
        if not _complete(o.type) and _complete(old.type):  # e.g. ZipMap's sequence of maps, which gs loses
            o.type.CopyFrom(old.type)
        elif (o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape")
              and old.type.tensor_type.HasField("shape")):
            elem = o.type.tensor_type.elem_type
            o.type.tensor_type.shape.CopyFrom(old.type.tensor_type.shape)
            o.type.tensor_type.elem_type = elem or old.type.tensor_type.elem_type
    shapeless = [o.name for o in ig.output if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape")]
    if shapeless:
        message = (f"{where} leaves graph output(s) {shapeless} whose rank neither the model declares nor "
                   "shape inference can give (ONNX requires a shape on every graph output)")
        if not targeted:
            raise InvalidEditResult(message)
        raise EditError(message, hint="fix the input shapes first (set_shapes), or choose outputs whose shape is known")
    try:
        onnx.checker.check_model(inferred)
    except Exception as exc:
        _blame(f"{where} leaves an invalid ONNX graph: {_first_line(exc)}", where, before, targeted, exc,
               hint="undo this edit (the session kept the last good model) and pick another node or tensor")
    del g.value_info[:]
    g.value_info.extend(ig.value_info)
    del g.output[:]
    g.output.extend(ig.output)
    copy_inferred_subgraphs(g, ig)  # inference also annotates If/Loop/Scan bodies
    return model


def _blame(message: str, where: str, before: onnx.ModelProto | None, targeted: bool, exc: Exception, *,
           hint: str) -> NoReturn:
    """Raise for an invalid edit result: the model's fault if it was invalid before the edit, else the user's
    choice (targeted edits: EditError) or our bug (whole-graph edits: InvalidEditResult)."""
    problem = _invalid(before, where) if before is not None else None
    if problem is not None:
        raise EditError(f"{where}: the model is invalid before this edit too: {problem}",
                        hint="the model breaks ONNX's rules on its own; re-export it or fix it first") from exc
    if not targeted:
        raise InvalidEditResult(message) from exc
    raise EditError(message, hint=hint) from exc


def _invalid(model: onnx.ModelProto, where: str) -> str | None:
    """Why ``model`` fails shape inference or the checker (first line), or None when it passes."""
    try:
        skel = weightless_skeleton(model, where)
        onnx.checker.check_model(onnx.shape_inference.infer_shapes(skel, strict_mode=False, data_prop=True))
    except Exception as exc:
        return _first_line(exc)
    return None


def _complete(t: onnx.TypeProto) -> bool:
    """Whether a type names its element types all the way down (tensor, sequence, map, optional)."""
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        return t.tensor_type.elem_type != 0
    if kind == "sequence_type":
        return _complete(t.sequence_type.elem_type)
    if kind == "map_type":
        return _complete(t.map_type.value_type)
    if kind == "optional_type":
        return _complete(t.optional_type.elem_type)
    return kind is not None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def node_by_name(graph: gs.Graph, name: str, where: str) -> gs.Node:
    for node in graph.nodes:
        if node.name == name:
            return node
    close = [n.name for n in graph.nodes if name.lower() in n.name.lower()][:5]
    raise EditError(
        f"{where}: no node named '{name}' in the graph",
        hint=f"use a name from the layer table{'; similar: ' + ', '.join(close) if close else ''}",
    )


def tensor_by_name(graph: gs.Graph, name: str, where: str) -> gs.Tensor:
    tensors = graph.tensors()
    if name not in tensors:
        close = [t for t in tensors if name.lower() in t.lower()][:5]
        raise EditError(
            f"{where}: no tensor named '{name}' in the graph",
            hint=f"use a name from the layer table's inputs/outputs columns{'; similar: ' + ', '.join(close) if close else ''}",
        )
    return tensors[name]
