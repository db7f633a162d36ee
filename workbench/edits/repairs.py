"""Repairs: recipe edits that turn a model TensorRT cannot take into one it can, and how to find them.

Edits (direct proto edits, dispatched by :mod:`workbench.edits`):

- :func:`split_shared_dims` (``split_shared_dims``): an input whose different dims share one symbolic name
  (``[1, 3, 'x', 'x']``, ``[-1, 3, 'h', 'h']``) makes TensorRT demand those dims be equal; each repeat gets its own
  name (``'x_3'``), so non-square shapes build.
- :func:`freeze_input` (``freeze_input``): a graph input becomes a constant initializer with the user's value (e.g.
  a voice-activity detector's sample rate ``sr``). ``If`` conditions then computed from constants only are
  evaluated (onnx's reference evaluator) and written as constants, so ``fold_constant_if`` removes the ``If``.
- static shapes (``set_shapes`` + ``fold_constants``): an ``If`` whose condition is computed from tensor shapes
  (``Shape``/``Size`` of a tensor, e.g. silero VAD's decoder, also inside another If's branches) is constant once the
  input shapes are; ``fold_constants`` then folds the shape chains and flattens the Ifs. The shapes come from the
  user (the check's ``--shapes`` profile); the repaired model takes only those shapes.

:func:`find_repairs` reads the graph and returns the :class:`Repair` s that apply (with ONNX Runtime's integer ops,
the existing ``dequantize_integer_ops``); a repair that needs the user's value (``needs_value``) is completed with
:meth:`Repair.with_value`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import recipe as R
from ..errors import EditError
from ._gs import unique_name
from .integer_ops import INTEGER_OPS

__all__ = ["Repair", "find_repairs", "fill_values", "split_shared_dims", "freeze_input", "shared_dims", "shape_ifs"]

_INTEGER = ("DynamicQuantizeLinear", *INTEGER_OPS)
_CONE_LIMIT = 64  # nodes in an If condition's cone that we evaluate; larger cones are not a "flag" input
_SMALL_INPUT = 16  # elements: an input this small (a sample rate, a flag, a mode) can sensibly be frozen


def _real_inputs(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in g.initializer}
    return [i for i in g.input if i.name not in inits]


def _dims(vi: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension] | None:
    t = vi.type.tensor_type
    return list(t.shape.dim) if vi.type.HasField("tensor_type") and t.HasField("shape") else None


def shared_dims(model: onnx.ModelProto) -> dict[str, dict[str, list[int]]]:
    """{input: {symbol: [axes]}} for each input that gives one symbolic name to more than one of its dims."""
    out: dict[str, dict[str, list[int]]] = {}
    for vi in _real_inputs(model.graph):
        axes: dict[str, list[int]] = {}
        for axis, d in enumerate(_dims(vi) or ()):
            if d.HasField("dim_param") and d.dim_param:
                axes.setdefault(d.dim_param, []).append(axis)
        shared = {sym: a for sym, a in axes.items() if len(a) > 1}
        if shared:
            out[vi.name] = shared
    return out


def _clear_output_shapes(g: onnx.GraphProto) -> None:
    for o in g.output:  # re-inferred by finish()
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")


def split_shared_dims(model: onnx.ModelProto, inputs: Sequence[str] = ()) -> None:
    """Rename each repeat of a symbolic dim within one input (``inputs`` empty: every input); in place."""
    g = model.graph
    real = {vi.name: vi for vi in _real_inputs(g)}
    for name in inputs:
        if name not in real:
            raise EditError(f"split_shared_dims: '{name}' is not a graph input", hint=f"graph inputs: {sorted(real)}")
    used = {d.dim_param for vi in (*g.input, *g.output, *g.value_info) for d in (_dims(vi) or ()) if d.dim_param}
    changed = False
    for name, vi in real.items():
        if inputs and name not in inputs:
            continue
        seen: set[str] = set()
        for axis, d in enumerate(_dims(vi) or ()):
            if not d.dim_param:
                continue
            if d.dim_param in seen:
                d.dim_param = unique_name(f"{d.dim_param}_{axis}", used)
                changed = True
            else:
                seen.add(d.dim_param)
    if changed:
        _clear_output_shapes(g)


def _value_array(vi: onnx.ValueInfoProto, value: Any, where: str) -> np.ndarray:
    if not vi.type.HasField("tensor_type"):
        raise EditError(f"{where}: input '{vi.name}' is not a tensor", hint="only tensor inputs can be frozen")
    if value is None:
        raise EditError(f"{where}: no value given for input '{vi.name}'",
                        hint=f"give the value the model will always see, e.g. {{\"input\": \"{vi.name}\", \"value\": 16000}}")
    t = vi.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise EditError(f"{where}: {value!r} is not a {np.dtype(dtype).name} value for input '{vi.name}' ({exc})",
                        hint="give a number or a nested list of numbers") from exc
    dims = _dims(vi)
    if dims is not None:
        declared = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        if arr.ndim != len(declared) and arr.size == 1 and all(d == 1 for d in declared):
            arr = arr.reshape([1] * len(declared))
        shown = "[" + ", ".join("?" if d is None else str(d) for d in declared) + "]"
        if arr.ndim != len(declared) or any(d is not None and d != s for d, s in zip(declared, arr.shape)):
            raise EditError(f"{where}: a value of shape {list(arr.shape)} does not fit input '{vi.name}' {shown}",
                            hint="give a value of the input's declared shape (a plain number for a 0-d input)")
    return arr


def freeze_input(model: onnx.ModelProto, name: str, value: Any) -> None:
    """Make graph input ``name`` a constant initializer holding ``value``; constant If conditions become constants."""
    where = f"freeze_input '{name}'"
    g = model.graph
    real = {vi.name: vi for vi in _real_inputs(g)}
    if name not in real:
        raise EditError(f"{where}: '{name}' is not a graph input", hint=f"graph inputs: {sorted(real)}")
    if len(real) == 1:
        raise EditError(f"{where}: '{name}' is the model's only input", hint="freeze a side input, not the data")
    arr = _value_array(real[name], value, where)
    vi = real[name]
    g.input.remove(vi)
    g.initializer.append(numpy_helper.from_array(arr, name))
    _constant_conditions(model)


def _cone(g: onnx.GraphProto, tensor: str, producers: Mapping[str, onnx.NodeProto],
          leaf: Callable[[str], bool]) -> list[onnx.NodeProto] | None:
    """Nodes computing ``tensor`` back to tensors ``leaf(t)`` accepts, in graph order; None past a subgraph, a
    tensor ``leaf`` refuses (it returns False) or :data:`_CONE_LIMIT` nodes."""
    seen: set[str] = set()
    nodes: dict[int, onnx.NodeProto] = {}
    stack = [tensor]
    while stack:
        t = stack.pop()
        if not t or t in seen:
            continue
        seen.add(t)
        node = producers.get(t)
        if node is None:
            if not leaf(t):
                return None
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return None
        nodes[id(node)] = node
        if len(nodes) > _CONE_LIMIT:
            return None
        stack.extend(node.input)
    order = {id(n): i for i, n in enumerate(g.node)}
    return sorted(nodes.values(), key=lambda n: order[id(n)])


def _constant_conditions(model: onnx.ModelProto) -> int:
    """Write each If condition computed from initializers and Constant nodes only as a new constant initializer."""
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    used = set(inits) | set(producers) | {vi.name for vi in g.input}
    done = 0
    for node in g.node:
        if node.op_type != "If" or not node.input or node.input[0] in inits:
            continue
        cond = node.input[0]
        cone = _cone(g, cond, producers, lambda t: t in inits)
        if not cone:
            continue
        needed = sorted({t for n in cone for t in n.input if t in inits})
        sub = helper.make_model(
            helper.make_graph(cone, "condition", [], [helper.make_empty_tensor_value_info(cond)],
                              [inits[t] for t in needed]),
            opset_imports=list(model.opset_import))
        sub.ir_version = model.ir_version
        (value,) = ReferenceEvaluator(sub).run([cond], {})
        value = np.asarray(value)
        if value.size != 1:
            continue
        const = unique_name(f"{node.name or 'If'}_condition", used)
        g.initializer.append(numpy_helper.from_array(value.astype(np.bool_).reshape(value.shape), const))
        inits[const] = g.initializer[-1]
        node.input[0] = const
        done += 1
    return done


# --- which repairs apply ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repair:
    """A repair the workbench can apply: ``edits`` in order (recipe edits), what it fixes (``why``) and, when the
    user must give a value first (``freeze_input``), the input that needs it and values the graph compares it to."""

    kind: str
    title: str
    why: str
    edits: tuple[R.Edit, ...]
    needs_value: str = ""
    examples: tuple[Any, ...] = field(default=())

    needs_shapes: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        """Whether it can be applied as is (no value or shape missing)."""
        return not any((isinstance(e, R.FreezeInput) and e.value is None)
                       or (isinstance(e, R.SetShapes) and not e.shapes) for e in self.edits)

    def with_value(self, value: Any) -> Repair:
        """This repair with the value of its frozen input filled in."""
        edits = tuple(replace(e, value=value) if isinstance(e, R.FreezeInput) else e for e in self.edits)
        return replace(self, edits=edits, title=self.title.replace("=VALUE", f"={value!r}"))

    def with_shapes(self, shapes: Mapping[str, Sequence[int]]) -> Repair:
        """This repair with the static shapes of its inputs (``needs_shapes``) filled in."""
        fixed: dict[str, tuple[R.Dim, ...]] = {k: tuple(int(d) for d in shapes[k]) for k in self.needs_shapes}
        edits = tuple(replace(e, shapes=fixed) if isinstance(e, R.SetShapes) else e for e in self.edits)
        said = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in fixed.items())
        return replace(self, edits=edits, title=self.title.replace("SHAPES", said))

    def to_dict(self) -> dict[str, Any]:
        """JSON types, as ``workbench check --json`` prints the repair."""
        return {"kind": self.kind, "title": self.title, "why": self.why, "edits": [e.to_dict() for e in self.edits],
                "needs_value": self.needs_value or None, "needs_shapes": list(self.needs_shapes) or None,
                "examples": list(self.examples), "ready": self.ready}


def _size(vi: onnx.ValueInfoProto) -> int | None:
    dims = _dims(vi)
    if dims is None or any(not (d.HasField("dim_value") and d.dim_value > 0) for d in dims):
        return None
    return int(np.prod([d.dim_value for d in dims], dtype=np.int64))


def _freezable_ifs(model: onnx.ModelProto) -> dict[str, tuple[list[str], list[Any]]]:
    """{input: ([If nodes], [constants compared with])} for Ifs whose condition depends only on small inputs."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    real = {vi.name: vi for vi in _real_inputs(g)}
    producers = {o: n for n in g.node for o in n.output}
    found: dict[str, tuple[list[str], list[Any]]] = {}
    for node in g.node:
        if node.op_type != "If" or not node.input or node.input[0] in inits:
            continue
        leaves: set[str] = set()

        def leaf(t: str, leaves: set[str] = leaves) -> bool:
            if t in inits:
                return True
            if t in real and (_size(real[t]) or _SMALL_INPUT + 1) <= _SMALL_INPUT:
                leaves.add(t)
                return True
            return False

        cone = _cone(g, node.input[0], producers, leaf)
        if not cone or len(leaves) != 1:
            continue
        (name,) = leaves
        examples: list[Any] = []
        for n in cone:  # the constants the input is compared with are the values it is meant to take
            for t in n.input:
                if t in inits and onnx.numpy_helper.to_array(inits[t]).size == 1:
                    examples.append(onnx.numpy_helper.to_array(inits[t]).reshape(()).item())
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value" and np.prod(a.t.dims, dtype=np.int64) == 1:
                        examples.append(onnx.numpy_helper.to_array(a.t).reshape(()).item())
        nodes, values = found.setdefault(name, ([], []))
        nodes.append(node.name)
        values += [v for v in examples if v not in values]
    return found


_SHAPE_OPS = ("Shape", "Size")


def _graphs(g: onnx.GraphProto, consts: frozenset[str] = frozenset()) -> Iterable[tuple[onnx.GraphProto, set[str]]]:
    """``g`` and every If/Loop/Scan body in it (depth first), each with the constant names it can see."""
    mine = set(consts) | {i.name for i in g.initializer}
    mine |= {o for n in g.node if n.op_type == "Constant" for o in n.output}
    yield g, mine
    for n in g.node:
        for a in n.attribute:
            for body in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                         list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
                yield from _graphs(body, frozenset(mine))


def shape_ifs(model: onnx.ModelProto) -> list[str]:
    """If nodes (main graph or inside bodies) whose condition is computed from constants and tensor shapes only
    (``Shape``/``Size`` of any tensor), at least one shape among them: constant once the input shapes are static."""
    found: list[str] = []
    for g, consts in _graphs(model.graph):
        producers = {o: n for n in g.node for o in n.output}
        for node in g.node:
            if node.op_type != "If" or not node.input or node.input[0] in consts:
                continue
            shapes: list[str] = []

            def leaf(t: str, shapes: list[str] = shapes, producers: Mapping[str, onnx.NodeProto] = producers,
                     consts: set[str] = consts) -> bool:
                p = producers.get(t)
                if p is not None and p.op_type in _SHAPE_OPS:
                    shapes.append(t)
                    return True
                return t in consts

            shape_producers = {o: None for o in producers if producers[o].op_type in _SHAPE_OPS}
            cone = _cone(g, node.input[0], {k: v for k, v in producers.items() if k not in shape_producers}, leaf)
            if cone is not None and shapes:
                found.append(node.name)
    return found


def _dynamic_inputs(model: onnx.ModelProto) -> list[str]:
    return [vi.name for vi in _real_inputs(model.graph)
            if (dims := _dims(vi)) is None or any(not (d.HasField("dim_value") and d.dim_value > 0) for d in dims)]


def find_repairs(model: onnx.ModelProto) -> list[Repair]:
    """The repairs that apply to ``model`` (graph analysis only; nothing is built or changed)."""
    repairs: list[Repair] = []
    shared = shared_dims(model)
    if shared:
        said = "; ".join(f"input '{name}' names " + ", ".join(f"dims {axes} '{sym}'" for sym, axes in syms.items())
                         for name, syms in shared.items())
        repairs.append(Repair(
            "split_shared_dims", f"give shared dims their own names ({', '.join(shared)})",
            f"{said}: TensorRT then demands those dims be equal (only square shapes build)",
            (R.SplitSharedDims(inputs=tuple(shared)),)))
    for name, (nodes, examples) in _freezable_ifs(model).items():
        repairs.append(Repair(
            "freeze_input", f"freeze input '{name}'=VALUE and fold If {', '.join(repr(n) for n in nodes)}",
            f"If node(s) {', '.join(repr(n) for n in nodes)} branch on input '{name}' alone; with '{name}' frozen to "
            f"the value you always run with, the branch taken is known and the If goes away"
            + (f" (the graph compares it with {', '.join(map(str, examples))})" if examples else ""),
            (R.FreezeInput(input=name, value=None), R.FoldConstantIf()), needs_value=name,
            examples=tuple(examples)))
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    const_ifs = [n.name for n in model.graph.node if n.op_type == "If" and n.input and n.input[0] in consts]
    if const_ifs:
        repairs.append(Repair("fold_constant_if", f"fold If {', '.join(repr(n) for n in const_ifs)}",
                              "an If with a constant condition: only one branch can run", (R.FoldConstantIf(),)))
    by_shape = shape_ifs(model)
    if by_shape:
        dynamic = _dynamic_inputs(model)
        ifs = ", ".join(repr(n) for n in by_shape[:4]) + (f" and {len(by_shape) - 4} more" if len(by_shape) > 4 else "")
        why = (f"If node(s) {ifs} branch on tensor shapes (Shape/Size): TensorRT cannot build such conditions "
               "(its builder may assert)")
        if dynamic:
            repairs.append(Repair(
                "static_shapes", "set static input shapes SHAPES and fold the shape-dependent If(s)",
                why + f"; with static shapes for {', '.join(dynamic)} (those you run with) the conditions are constant "
                "and fold_constants removes the Ifs; the repaired model then takes only those shapes",
                (R.SetShapes(shapes={}), R.FoldConstants()), needs_shapes=tuple(dynamic)))
        else:
            repairs.append(Repair("fold_shape_ifs", f"fold the shape-dependent If(s) {ifs}",
                                  why + "; the input shapes are static, so fold_constants computes the conditions",
                                  (R.FoldConstants(),)))
    integer = [n for n in model.graph.node if n.op_type in _INTEGER]
    if integer:
        ops = ", ".join(sorted({n.op_type for n in integer}))
        repairs.append(Repair("dequantize_integer_ops", f"turn {len(integer)} ONNX Runtime integer op(s) back to float",
                              f"{ops} are ONNX Runtime integer ops; TensorRT has no kernel for them",
                              (R.DequantizeIntegerOps(),)))
    return repairs


def fill_values(repairs: Iterable[Repair], values: Mapping[str, Any],
                shapes: Mapping[str, Sequence[int]] | None = None) -> list[Repair]:
    """``repairs`` with the values of ``values`` ({input: value}) filled in where they need one, and the static
    ``shapes`` ({input: dims}) where they need shapes (only when every input they need is given)."""
    out = []
    for r in repairs:
        if r.needs_value and r.needs_value in values:
            r = r.with_value(values[r.needs_value])
        if r.needs_shapes and shapes and all(k in shapes for k in r.needs_shapes):
            r = r.with_shapes(shapes)
        out.append(r)
    return out
