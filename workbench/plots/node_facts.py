"""Everything the workbench knows about one ONNX node, gathered into one typed value for the joined view.

:func:`node_facts` is pure: it reads the model and whichever results exist (timing tables, engine layer
information, a scale cache, a layerwise comparison, a sensitivity ranking) and returns :class:`NodeFacts`.
The widget (:mod:`workbench.ui.node_view`) only draws it. A node that is not in the model (a layer name from an
imported trtexec profile of another export) still gets its engine layers and timings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..graph import constant_weights, tensor_infos
from ..precision import node_precisions
from ..precision.scales import ScaleCache
from ..profile import EngineInfo
from ..table import Table
from .graph_view import attribute_text

__all__ = ["WeightStats", "LayerFacts", "RangeFacts", "ErrorFacts", "SensitivityFacts", "NodeFacts", "node_facts",
           "weight_stats", "layer_nodes", "output_amax", "HIST_BINS"]

HIST_BINS = 24
_THROUGH = ("DequantizeLinear", "Cast", "Identity")  # a weight read through these is still the node's weight


@dataclass(frozen=True)
class WeightStats:
    """A weight tensor the node reads (an initializer or a Constant node's value), with its statistics."""

    tensor: str
    shape: tuple[int, ...]
    dtype: str
    source: str  # "initializer", "Constant node" or "via <op> <node>"
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    hist: tuple[int, ...] = ()  # HIST_BINS counts over [min, max]
    note: str = ""  # why there are no statistics (external data not loaded, not numeric, ...)


@dataclass(frozen=True)
class LayerFacts:
    """A row of a timing table (profile ``label``) that covers the node: an engine layer it fused into, or the
    node's own ONNX Runtime row."""

    label: str
    layer: str
    type: str
    precision: str | None
    median_ms: float
    pct: float
    onnx_nodes: tuple[str, ...]
    tactic: str | None = None
    node: str = ""  # the node these facts are about

    @property
    def fused(self) -> tuple[str, ...]:
        """The layer's other ONNX nodes (fused with ``node``)."""
        return tuple(n for n in self.onnx_nodes if n != self.node)


@dataclass(frozen=True)
class RangeFacts:
    """The calibrated range of one of the node's tensors (``role``: "input" or "output")."""

    tensor: str
    role: str
    amax: float  # the value used for the scale (override or the method's)
    method: str
    min: float
    max: float
    thresholds: dict[str, float] = field(default_factory=dict)
    hist: tuple[int, ...] = ()  # counts of |x| over [0, hist_max]
    hist_max: float = 0.0
    override: float | None = None


@dataclass(frozen=True)
class ErrorFacts:
    """The layerwise error of one of the node's output tensors (last Compare layer by layer)."""

    tensor: str
    rel_l2: float | None
    max_abs: float | None
    cosine: float | None
    snr_db: float | None
    local_rel_l2: float | None
    passed: bool | None


@dataclass(frozen=True)
class SensitivityFacts:
    """The node's row of the last sensitivity ranking."""

    rank: int
    score: float
    of: int  # layers ranked
    metric_gain: float | None = None


@dataclass(frozen=True)
class NodeFacts:
    """One node's facts; empty tuples/None where nothing is known."""

    name: str
    in_model: bool
    op: str = ""
    domain: str = ""
    inputs: tuple[tuple[str, str], ...] = ()  # (tensor, "dtype [shape]")
    outputs: tuple[tuple[str, str], ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()  # (name, readable value)
    weights: tuple[WeightStats, ...] = ()
    precision: str | None = None  # as the graph says (Cast / Q/DQ around it)
    layers: tuple[LayerFacts, ...] = ()
    ranges: tuple[RangeFacts, ...] = ()
    errors: tuple[ErrorFacts, ...] = ()
    sensitivity: SensitivityFacts | None = None


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def weight_stats(tensor: str, array: np.ndarray, source: str) -> WeightStats:
    """Shape, dtype, min/max/mean/std and a HIST_BINS-bin histogram of a weight array (NaN/inf left out)."""
    shape = tuple(int(d) for d in array.shape)
    dtype = str(array.dtype)
    if array.size == 0 or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        return WeightStats(tensor, shape, dtype, source, note="empty" if array.size == 0 else "not numeric")
    values = np.asarray(array, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return WeightStats(tensor, shape, dtype, source, note="no finite values")
    lo, hi = float(values.min()), float(values.max())
    counts, _ = np.histogram(values, bins=HIST_BINS, range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))
    return WeightStats(tensor, shape, dtype, source, lo, hi, float(values.mean()), float(values.std()),
                       tuple(int(c) for c in counts))


def _constant_array(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def _weights(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[WeightStats, ...]:
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output if o}
    const_reads = {t for t, _shape in constant_weights(model).get(node.name, [])}

    def stats_of(tensor: str, source: str) -> WeightStats | None:
        try:
            if tensor in inits:
                t = inits[tensor]
                if t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data:
                    return WeightStats(tensor, tuple(t.dims), "", source, note="external data not loaded")
                return weight_stats(tensor, numpy_helper.to_array(t), source)
            p = producers.get(tensor)
            if p is not None and p.op_type == "Constant":
                arr = _constant_array(p)
                if arr is not None:
                    return weight_stats(tensor, arr, f"Constant node {p.name}" if p.name else "Constant node")
        except (ValueError, TypeError) as exc:  # a tensor onnx cannot turn into an array (e.g. sparse)
            return WeightStats(tensor, (), "", source, note=f"unreadable: {exc}")
        return None

    out: list[WeightStats] = []
    for tensor in dict.fromkeys([i for i in node.input if i] + sorted(const_reads - set(node.input))):
        found = stats_of(tensor, "initializer")
        if found is None:  # a weight behind DequantizeLinear / Cast (Q/DQ or fp16 models)
            p = producers.get(tensor)
            if p is not None and p.op_type in _THROUGH and p.input:
                found = stats_of(p.input[0], f"via {p.op_type} {p.name}".strip())
        if found is not None:
            out.append(found)
    return tuple(out)


def _io(model: onnx.ModelProto, names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    infos = tensor_infos(model, set(names))
    out = []
    for n in names:
        if not n:
            continue
        info = infos.get(n)
        if info is None:
            out.append((n, "?"))
        else:
            shape = "?" if info.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in info.shape) + "]"
            out.append((n, f"{info.dtype} {shape}"))
    return tuple(out)


def layer_nodes(table: Table) -> dict[str, list[int]]:
    """{ONNX node: [row indices]} of a timing table."""
    out: dict[str, list[int]] = {}
    for i, nodes in enumerate(table.column("onnx_nodes")):
        for n in nodes or ():
            out.setdefault(n, []).append(i)
    return out


def _layers(name: str, profiles: Mapping[str, Table], engines: Mapping[str, EngineInfo]) -> tuple[LayerFacts, ...]:
    out: list[LayerFacts] = []
    for label, table in profiles.items():
        tactics = {layer.name: layer.tactic for layer in engines[label].layers} if label in engines else {}
        records = table.records()
        for i in layer_nodes(table).get(name, []):
            r = records[i]
            out.append(LayerFacts(label, r["name"], r.get("type") or "", r.get("precision"), float(r["median_ms"]),
                                  float(r.get("pct") or 0.0), tuple(r["onnx_nodes"] or ()), tactics.get(r["name"]), name))
    covered = {(f.label, f.layer) for f in out}
    for label, info in engines.items():  # engine layer info without a timing table
        for layer in info.layers:
            if name in layer.onnx_nodes and (label, layer.name) not in covered:
                out.append(LayerFacts(label, layer.name, layer.type, layer.precision, 0.0, 0.0, layer.onnx_nodes,
                                      layer.tactic, name))
    return tuple(out)


def _ranges(node: onnx.NodeProto | None, scales: ScaleCache | None) -> tuple[RangeFacts, ...]:
    if node is None or scales is None:
        return ()
    out = []
    for role, names in (("input", node.input), ("output", node.output)):
        for t in dict.fromkeys(n for n in names if n):
            s = scales.tensors.get(t)
            if s is None:
                continue
            out.append(RangeFacts(t, role, float(s.value), scales.method, float(s.min), float(s.max),
                                  dict(s.thresholds), tuple(s.hist), float(s.hist_max), s.override))
    return tuple(out)


def output_amax(model: onnx.ModelProto, scales: ScaleCache) -> dict[str, float]:
    """{node: the calibrated amax of its first output tensor that has one} (the graph's calibration overlay)."""
    out = {}
    for n in model.graph.node:
        for t in n.output:
            s = scales.tensors.get(t)
            if s is not None:
                out[n.name] = float(s.value)
                break
    return out


def _errors(name: str, layers: Table | None) -> tuple[ErrorFacts, ...]:
    if layers is None:
        return ()
    return tuple(ErrorFacts(r["tensor"], _finite(r.get("rel_l2")), _finite(r.get("max_abs")), _finite(r.get("cosine")),
                            _finite(r.get("snr_db")), _finite(r.get("local_rel_l2")), r.get("passed"))
                 for r in layers.records() if r.get("node") == name)


def _sensitivity(name: str, ranking: Table | None) -> SensitivityFacts | None:
    if ranking is None:
        return None
    for r in ranking.records():
        if r.get("node") == name:
            return SensitivityFacts(int(r["rank"]), float(r["score"]), len(ranking), _finite(r.get("metric_gain")))
    return None


def node_facts(name: str, model: onnx.ModelProto, *, profiles: Mapping[str, Table] | None = None,
               engines: Mapping[str, EngineInfo] | None = None, scales: ScaleCache | None = None,
               layer_errors: Table | None = None, sensitivity: Table | None = None) -> NodeFacts:
    """The facts about node ``name`` of ``model``: the ONNX node (attributes, inputs/outputs, weight statistics,
    precision), the timing rows/engine layers that name it (``profiles`` {label: timing Table}, ``engines``
    {label: EngineInfo} for tactics), the calibrated ranges of its tensors (``scales``), its layerwise error
    (``layer_errors``: a CompareReport's ``layers``) and its sensitivity (a ranking table with ``rank``/``node``/
    ``score``)."""
    profiles, engines = dict(profiles or {}), dict(engines or {})
    node = next((n for n in model.graph.node if n.name == name), None)
    layers = _layers(name, profiles, engines)
    errors, rank = _errors(name, layer_errors), _sensitivity(name, sensitivity)
    if node is None:
        return NodeFacts(name, False, layers=layers, errors=errors, sensitivity=rank)
    return NodeFacts(
        name, True, op=node.op_type, domain=node.domain,
        inputs=_io(model, list(node.input)), outputs=_io(model, list(node.output)),
        attributes=tuple((a.name, attribute_text(a, limit=200)) for a in node.attribute),
        weights=_weights(model, node), precision=node_precisions(model).get(name),
        layers=layers, ranges=_ranges(node, scales), errors=errors, sensitivity=rank)
