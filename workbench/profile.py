"""Per-layer timing tables with one schema for every source, and TensorRT layer information.

Every source gives a :class:`~workbench.table.Table` with the columns ``TIMING_COLUMNS``:
``name`` (backend layer), ``onnx_nodes`` (the ONNX nodes it covers), ``type``, ``precision``,
``median_ms``, ``mean_ms``, ``pct`` (share of the summed median time). Sources:

- ONNX Runtime on the CPU: :func:`workbench.backends.ort_profile.profile_model` / ``OrtEngine.profile``.
- trtexec files: ``--exportLayerInfo`` (IEngineInspector JSON) and ``--exportProfile``: :func:`from_trtexec`.
  Both generations of the inspector JSON are read: TensorRT <= 10 (``Bindings``, ``Format/Datatype``) and
  TensorRT 11 (structured ``I/O Tensors``, separate ``Format`` and ``DataType``); the ``Metadata`` field
  (``[ONNX Layer: a]\\x1f[ONNX Layer: b]``) names the ONNX nodes when present.
- TensorRT's IProfiler on a GPU: :func:`from_layer_times` aggregates ``report_layer_time`` samples.

Fused layer names are mapped back to ONNX nodes by :func:`onnx_nodes_of`; reformat layers TensorRT
inserts ("Reformatting CopyNode for Input Tensor 0 to X") are charged to the ONNX nodes of the layer X
they serve (their ``type`` stays TensorRT's). :func:`compare_profiles` matches layers of several
engines by ONNX node.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from .backends.ort_profile import PRECISION_RANK, TIMING_COLUMNS, lowest_precision, timing_table
from .errors import DataError
from .fsio import write_json
from .table import Table

__all__ = [
    "TIMING_COLUMNS",
    "EngineTensor",
    "EngineLayer",
    "EngineInfo",
    "read_layer_info",
    "read_profile_json",
    "from_trtexec",
    "from_layer_times",
    "layer_details",
    "onnx_nodes_of",
    "precision_of_format",
    "timing_table",
    "total_ms",
    "node_times",
    "op_type_of",
    "group_times",
    "precision_counts",
    "compare_profiles",
    "profile_summary",
    "is_reformat",
    "layer_op",
    "save_timings",
    "load_timings",
]

PathLike = str | os.PathLike[str]

# ---------------------------------------------------------------------------------------------------------------
# engine layer information


@dataclass(frozen=True)
class EngineTensor:
    """One input or output of an engine layer: name, dims, memory format and data type (as TensorRT wrote them)."""

    name: str
    dims: tuple[int, ...] = ()
    format: str | None = None
    dtype: str | None = None

    @property
    def precision(self) -> str | None:
        return precision_of_format(self.dtype) or precision_of_format(self.format)


@dataclass(frozen=True)
class EngineLayer:
    """One engine layer (after fusion) with the ONNX nodes it covers."""

    name: str
    type: str = ""
    onnx_nodes: tuple[str, ...] = ()
    precision: str | None = None
    tactic: str | None = None
    inputs: tuple[EngineTensor, ...] = ()
    outputs: tuple[EngineTensor, ...] = ()
    metadata: str | None = None
    origin: str | None = None


@dataclass(frozen=True)
class EngineInfo:
    """Layer information of one engine: layers in execution order, I/O tensors, which JSON generation."""

    layers: tuple[EngineLayer, ...]
    io_tensors: tuple[dict[str, Any], ...] = ()
    generation: str = ""
    source: str = ""
    unmapped: tuple[str, ...] = field(default=())

    def layer(self, name: str) -> EngineLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


_DTYPE_WORDS = [
    (r"\bfp32\b|\bfloat\b|\bfloat32\b|\bkfloat\b", "fp32"),
    (r"\bfp16\b|\bhalf\b|\bfloat16\b|\bkhalf\b", "fp16"),
    (r"\bbf16\b|\bbfloat16\b|\bkbf16\b", "bf16"),
    (r"\bfp8\b|\be4m3\b|\bkfp8\b", "fp8"),
    (r"\bfp4\b|\be2m1\b|\bkfp4\b", "fp4"),
    (r"\buint8\b|\bkuint8\b", "uint8"),
    (r"\bint8\b|\bkint8\b", "int8"),
    (r"\bint4\b|\bkint4\b", "int4"),
    (r"\bint32\b|\bkint32\b", "int32"),
    (r"\bint64\b|\bkint64\b", "int64"),
    (r"\bbool\b|\bkbool\b", "bool"),
]


def precision_of_format(text: str | None) -> str | None:
    """The data type named in a TensorRT format/data-type string ("Channel major FP16 format ...", "Half", "Int8")."""
    if not text:
        return None
    low = str(text).lower()
    for pattern, label in _DTYPE_WORDS:
        if re.search(pattern, low):
            return label
    return None


def _tensor(entry: Any) -> EngineTensor:
    if isinstance(entry, str):
        return EngineTensor(entry)
    name = str(entry.get("Name", ""))
    dims = tuple(int(d) for d in entry.get("Dimensions", []) if isinstance(d, (int, float)))
    if "Format/Datatype" in entry:  # TensorRT <= 10: one string carries both
        text = str(entry["Format/Datatype"])
        return EngineTensor(name, dims, text, precision_of_format(text))
    dtype = entry.get("DataType", entry.get("Datatype"))  # TensorRT 11: split fields
    return EngineTensor(name, dims, entry.get("Format"), str(dtype) if dtype is not None else None)


_METADATA = re.compile(r"\[ONNX Layer: (.*?)\](?=[\x1e\x1f]|$|\[)", re.S)
_REFORMAT = re.compile(r"^Reformatting CopyNode for (?:Input|Output) Tensor \d+ to (.+)$")
_TRT_PREFIXES = ("copied_squeeze_after_", "unsqueeze_node_after_", "squeeze_node_after_", "reshape_after_",
                 "reshape_before_", "shuffle_after_", "shuffle_before_", "squeeze_after_", "unsqueeze_after_",
                 "transpose_after_", "transpose_before_", "cast_after_", "cast_before_")
_WEIGHT = re.compile(r"(\.|_)(weight|bias|running_mean|running_var|scale|zero_point)s?$", re.I)


def metadata_nodes(metadata: str | None) -> list[str]:
    """ONNX node names from a layer's ``Metadata`` ("[ONNX Layer: a]\\x1f[ONNX Layer: b]")."""
    if not metadata:
        return []
    return [m.strip() for m in _METADATA.findall(str(metadata))]


def is_reformat(name: str, layer_type: str = "") -> bool:
    """True for the reformat/copy layers TensorRT inserts between layers of different formats."""
    return bool(_REFORMAT.match(name)) or (layer_type == "Reformat" and name.startswith("Reformatted"))


def _split_parts(name: str) -> list[str]:
    """Fused name -> its parts: split on " + ", unwrap PWN(a, b) and {ForeignNode[a...b]}."""
    parts: list[str] = []
    for part in name.split(" + "):
        part = part.strip()
        foreign = re.fullmatch(r"\{?ForeignNode\[(.*)\]\}?", part)
        if foreign:
            ends = foreign.group(1).split("...")
            parts.extend(p for p in (ends[0], ends[-1]) if p)
            parts.append("\x00range:" + foreign.group(1))
            continue
        while True:
            m = re.fullmatch(r"(?:PWN|Pointwise|PointWise)\((.*)\)", part)
            if not m:
                break
            inner = m.group(1)
            subs, depth, cur = [], 0, ""
            for ch in inner:
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                if ch == "," and depth == 0:
                    subs.append(cur.strip())
                    cur = ""
                else:
                    cur += ch
            subs.append(cur.strip())
            if len(subs) == 1:
                part = subs[0]
                continue
            for s in subs:
                parts.extend(_split_parts(s))
            part = ""
            break
        if part:
            parts.append(part)
    return parts


def _strip_trt_prefix(part: str) -> str:
    """Drop what TensorRT adds around an ONNX name: ``reshape_after_X`` -> X, Myelin's ``X_myl0_5`` -> X."""
    for prefix in _TRT_PREFIXES:
        if part.startswith(prefix):
            part = part[len(prefix):]
            break
    return re.sub(r"_myl\d+_\d+$", "", part)


def _generated(part: str) -> bool:
    """Names TensorRT/Myelin make up (``__myl_CorrMulAddRelu_myl0_2``, ``__mye493_0``): no ONNX node in them."""
    return part.startswith(("__myl", "__mye", "__myelin")) or "(Unnamed Layer" in part


def onnx_nodes_of(layer_name: str, model: onnx.ModelProto | None = None, *, metadata: str | None = None) -> list[str]:
    """The ONNX nodes a TensorRT layer covers, from its ``Metadata`` when present, else its (fused) name.

    Without ``model`` the name's parts are filtered by what TensorRT adds (``(Unnamed Layer* 3) [Shuffle]``,
    ``reshape_after_X``, weight names such as ``conv1.weight``). With ``model`` only its node names (or the
    producers of its tensor names) count and ``ForeignNode[a...b]`` expands to the nodes from a to b.
    (:func:`read_layer_info` with a model also adds the DequantizeLinear nodes TensorRT folds silently.)
    """
    nodes_in_model = None
    producer: dict[str, str] = {}
    if model is not None:
        nodes_in_model = [n.name for n in model.graph.node]
        producer = {o: n.name for n in model.graph.node for o in n.output}
    from_meta = metadata_nodes(metadata)
    if from_meta:
        if nodes_in_model is None:
            return from_meta
        known = set(nodes_in_model)
        hit = [n for n in from_meta if n in known] + [producer[n] for n in from_meta if n not in known and n in producer]
        if hit:
            return list(dict.fromkeys(hit))
    layer_name = _base_name(layer_name)
    target = _REFORMAT.match(layer_name)
    if target:
        layer_name = target.group(1)
    found: list[str] = []
    for part in _split_parts(layer_name):
        if part.startswith("\x00range:"):
            if nodes_in_model is not None:
                ends = part[len("\x00range:"):].split("...")
                a, b = ends[0], ends[-1]
                if a in nodes_in_model and b in nodes_in_model:
                    i, j = nodes_in_model.index(a), nodes_in_model.index(b)
                    found.extend(nodes_in_model[min(i, j): max(i, j) + 1])
            continue
        if _generated(part) or part.startswith("onnx::"):
            continue
        cand = _strip_trt_prefix(part)
        if nodes_in_model is not None:
            if cand in nodes_in_model:
                found.append(cand)
            elif cand in producer:
                found.append(producer[cand])
            continue
        if _generated(cand) or _WEIGHT.search(cand) or not cand:
            continue
        found.append(cand)
    found = list(dict.fromkeys(found))
    if nodes_in_model is not None:
        order = {n: i for i, n in enumerate(nodes_in_model)}
        found.sort(key=lambda n: order[n])
    return found


def _absorb_dequantize(layers: list[dict[str, Any]], model: onnx.ModelProto) -> None:
    """Give each unmapped DequantizeLinear (and Constant) node to the layer holding all its consumers."""
    owner = {n: i for i, layer in enumerate(layers) for n in layer["onnx_nodes"] if not layer["reformat"]}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n.name)
    for n in model.graph.node:
        if n.name in owner or n.op_type not in ("DequantizeLinear", "Constant"):
            continue
        users = {owner.get(c) for o in n.output for c in consumers.get(o, [])}
        if len(users) == 1 and None not in users:
            i = users.pop()
            layers[i]["onnx_nodes"].append(n.name)
            owner[n.name] = i
    order = {n.name: k for k, n in enumerate(model.graph.node)}
    for layer in layers:
        layer["onnx_nodes"].sort(key=lambda x: order.get(x, 0))


def _load_json(source: Any, what: str) -> Any:
    if isinstance(source, (dict, list)):
        return source, f"the given {what}"
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{what} file '{path}' does not exist",
                        hint="pass the file trtexec wrote (--exportLayerInfo=G.json / --exportProfile=P.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} file '{path}' is not valid JSON ({exc})",
                        hint="re-export it with trtexec; an interrupted run leaves a truncated file") from exc


def read_layer_info(source: Any, *, model: onnx.ModelProto | None = None) -> EngineInfo:
    """Read IEngineInspector JSON (trtexec ``--exportLayerInfo``): a path, the parsed dict, or a list of layer
    dicts like the build metadata's ``engine_layers`` ({name, type, tactic, onnx_nodes}).

    With ``model``, each layer's ONNX nodes are checked against the model's node names and a file that names
    none of them raises :class:`DataError`.
    """
    data, where = _load_json(source, "TensorRT layer info")
    if isinstance(data, list):
        data = {"Layers": data}
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise DataError(f"{where} has no 'Layers' list: it is not TensorRT engine layer information",
                        hint="export it with trtexec --exportLayerInfo=G.json --profilingVerbosity=detailed")
    if "I/O Tensors" in data:
        generation, io = "tensorrt-11", tuple(dict(t) for t in data["I/O Tensors"])
    elif "Bindings" in data:
        generation, io = "tensorrt-10", tuple({"Name": b} for b in data["Bindings"])
    else:
        generation, io = "layer-list", ()
    raw: list[dict[str, Any]] = []
    for entry in data["Layers"]:
        if isinstance(entry, str):  # --profilingVerbosity=layer_names_only
            entry = {"Name": entry}
        if not isinstance(entry, dict):
            raise DataError(f"{where}: a layer entry is {type(entry).__name__}, not an object",
                            hint="export it with trtexec --exportLayerInfo=G.json --profilingVerbosity=detailed")
        name = str(entry.get("Name", entry.get("name", "")))
        kind = str(entry.get("LayerType", entry.get("type", "")))
        meta = entry.get("Metadata")
        given = entry.get("onnx_nodes")
        if given is not None and model is None:
            nodes = [str(n) for n in given]
        else:
            nodes = onnx_nodes_of(name, model, metadata=meta or ("".join(f"[ONNX Layer: {n}]\x1f" for n in given)
                                                                   if given else None))
        inputs = tuple(_tensor(t) for t in entry.get("Inputs", []))
        outputs = tuple(_tensor(t) for t in entry.get("Outputs", []))
        weights = entry.get("Weights", {}).get("Type") if isinstance(entry.get("Weights"), dict) else None
        labels = [t.precision for t in inputs + outputs] + [precision_of_format(weights)]
        raw.append({"name": name, "type": kind, "onnx_nodes": list(nodes), "precision": lowest_precision(labels),
                    "tactic": entry.get("TacticName", entry.get("tactic")) or None, "inputs": inputs,
                    "outputs": outputs, "metadata": meta, "origin": entry.get("Origin"),
                    "reformat": is_reformat(name, kind)})
    unmapped: tuple[str, ...] = ()
    if model is not None:
        _absorb_dequantize(raw, model)
        if raw and not any(r["onnx_nodes"] for r in raw):
            raise DataError(f"{where} names none of the model's {len(model.graph.node)} nodes: the engine was not "
                            f"built from this model", hint="pass the ONNX model the engine was built from, or no model")
        unmapped = tuple(r["name"] for r in raw if not r["onnx_nodes"])
    layers = tuple(EngineLayer(name=r["name"], type=r["type"], onnx_nodes=tuple(r["onnx_nodes"]),
                               precision=r["precision"], tactic=r["tactic"], inputs=r["inputs"], outputs=r["outputs"],
                               metadata=r["metadata"], origin=r["origin"]) for r in raw)
    return EngineInfo(layers=layers, io_tensors=io, generation=generation, source=where, unmapped=unmapped)


def read_profile_json(source: Any) -> list[dict[str, Any]]:
    """Read trtexec ``--exportProfile`` JSON: [{name, median_ms, mean_ms, total_ms, pct}] in file order.

    The file is a list whose first entry is ``{"count": N}`` (profiled iterations), then one entry per layer
    with ``timeMs`` (total over N), ``averageMs``, ``medianMs`` and ``percentage``.
    """
    data, where = _load_json(source, "TensorRT profile")
    if isinstance(data, dict) and isinstance(data.get("profile"), list):
        data = data["profile"]
    if not isinstance(data, list):
        raise DataError(f"{where} is not a trtexec profile (expected a JSON list of layers)",
                        hint="export it with trtexec --exportProfile=P.json")
    out = []
    for entry in data:
        if not isinstance(entry, dict) or "name" not in entry:
            continue
        mean = entry.get("averageMs", entry.get("timeMs"))
        median = entry.get("medianMs", mean)
        if mean is None:
            raise DataError(f"{where}: layer '{entry['name']}' has no time (averageMs/timeMs)",
                            hint="export it with trtexec --exportProfile=P.json")
        out.append({"name": str(entry["name"]), "median_ms": float(median), "mean_ms": float(mean),
                    "total_ms": float(entry.get("timeMs", mean)), "pct": entry.get("percentage")})
    if not out:
        raise DataError(f"{where} holds no layer timings", hint="export it with trtexec --exportProfile=P.json "
                        "(--separateProfileRun profiles every layer)")
    return out


_PROFILE_SUFFIX = re.compile(r" \[profile \d+\]$")


def _base_name(name: str) -> str:
    """A layer's name without the `` [profile N]`` TensorRT appends for optimisation profiles after the first."""
    return _PROFILE_SUFFIX.sub("", name)


def _check_same_engine(info: EngineInfo, times: Iterable[str], where: str) -> None:
    names = {layer.name for layer in info.layers}
    times = list(times)
    missing = [n for n in times if n not in names and _base_name(n) not in names]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(times)} timed layers in {where} are not in the layer info {info.source} "
            f"(e.g. '{missing[0]}'): the two files come from different engines",
            hint="export both from one engine: trtexec --loadEngine=E --exportLayerInfo=G.json "
                 "--exportProfile=P.json --profilingVerbosity=detailed")


def _records(info: EngineInfo | None, times: Sequence[Mapping[str, Any]],
             model: onnx.ModelProto | None = None) -> list[dict[str, Any]]:
    by_name = {layer.name: layer for layer in info.layers} if info is not None else {}
    recs = []
    for t in times:
        layer = by_name.get(t["name"]) or by_name.get(_base_name(t["name"]))
        if layer is not None:
            nodes, kind, prec = list(layer.onnx_nodes), layer.type, layer.precision
        else:
            nodes, kind, prec = onnx_nodes_of(t["name"], model), ("Reformat" if is_reformat(t["name"]) else ""), None
        recs.append({"name": t["name"], "onnx_nodes": nodes, "type": kind, "precision": prec,
                     "median_ms": t["median_ms"], "mean_ms": t["mean_ms"]})
    return recs


def from_trtexec(layers: Any = None, profile: Any = None, *, model: onnx.ModelProto | None = None) -> Table:
    """Timing table from trtexec ``--exportLayerInfo`` (G) and ``--exportProfile`` (P) JSON.

    With only G, times are 0 (the layer structure, precisions and ONNX mapping are still there); with only
    P, ONNX nodes come from the layer names and precision is unknown. A P from another engine than G
    raises :class:`DataError`.
    """
    if layers is None and profile is None:
        raise DataError("no TensorRT files given", hint="pass --trt-layers G.json and/or --trt-profile P.json")
    info = read_layer_info(layers, model=model) if layers is not None else None
    if profile is None:
        times = [{"name": layer.name, "median_ms": 0.0, "mean_ms": 0.0} for layer in info.layers]  # type: ignore[union-attr]
    else:
        times = read_profile_json(profile)
        if info is not None:
            _check_same_engine(info, (t["name"] for t in times), str(profile) if not isinstance(profile, (list, dict))
                               else "the given profile")
    return timing_table(_records(info, times, model))


def from_layer_times(times: Mapping[str, Sequence[float]], layer_info: Any = None) -> Table:
    """Aggregate IProfiler ``report_layer_time(name, ms)`` samples (one list per layer) into a timing table.

    ``layer_info`` (an :class:`EngineInfo`, inspector JSON path/dict, or build-metadata ``engine_layers``)
    supplies ONNX nodes, types and precisions; without it they come from the layer names.
    """
    info = layer_info if isinstance(layer_info, EngineInfo) or layer_info is None else read_layer_info(layer_info)
    rows = []
    for name, samples in times.items():
        samples = [float(s) for s in samples]
        if not samples:
            continue
        rows.append({"name": str(name), "median_ms": statistics.median(samples), "mean_ms": statistics.fmean(samples)})
    if info is not None:
        _check_same_engine(info, (r["name"] for r in rows), "the profiler samples")
    return timing_table(_records(info, rows))


def layer_details(info: EngineInfo) -> Table:
    """One row per engine layer: name, type, onnx_nodes, precision, tactic, input and output formats."""
    def fmt(ts: Sequence[EngineTensor]) -> list[str]:
        return [f"{t.name} {list(t.dims)} {t.format or ''}{' ' + t.dtype if t.dtype and t.dtype not in (t.format or '') else ''}"
                .strip() for t in ts]

    return Table(("name", "type", "onnx_nodes", "precision", "tactic", "inputs", "outputs"), tuple(
        (layer.name, layer.type, list(layer.onnx_nodes), layer.precision, layer.tactic, fmt(layer.inputs),
         fmt(layer.outputs)) for layer in info.layers))


# ---------------------------------------------------------------------------------------------------------------
# analysis of timing tables


def _check_table(table: Table) -> None:
    missing = [c for c in TIMING_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"not a timing table: columns {missing} are missing", hint=f"timing tables have {TIMING_COLUMNS}")


def total_ms(table: Table) -> float:
    """Sum of the layers' median times (ms)."""
    _check_table(table)
    return float(sum(table.column("median_ms")))


def node_times(table: Table) -> dict[str, float]:
    """{ONNX node: ms} for colouring a graph view: each layer's median split evenly over its nodes (sums to the total)."""
    _check_table(table)
    out: dict[str, float] = {}
    for rec in table.records():
        nodes = rec["onnx_nodes"] or []
        for n in nodes:
            out[n] = out.get(n, 0.0) + rec["median_ms"] / len(nodes)
    return out


_MAIN_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "LSTM", "GRU", "Einsum", "QLinearConv",
             "QLinearMatMul", "ConvInteger", "MatMulInteger")


def op_type_of(node: str, model: onnx.ModelProto | None = None) -> str:
    """ONNX op type of a node: from ``model`` when given, else from its name ("Conv_0", "/layer1/conv/Conv_1")."""
    if model is not None:
        for n in model.graph.node:
            if n.name == node:
                return n.op_type
    last = node.rstrip("/").split("/")[-1]
    return re.sub(r"(_\d+)+$", "", last) or last


def layer_op(rec: Mapping[str, Any], ops: Mapping[str, str] | None = None) -> str:
    """The main ONNX op of a timing-table row ("Conv" for "Conv_5 + Add_6 + Relu_7"; "Reformat" for reformats)."""
    if is_reformat(rec["name"], rec["type"]) or rec["type"] in ("ReorderInput", "ReorderOutput"):
        return "Reformat"
    nodes = rec["onnx_nodes"] or []
    if not nodes:
        return rec["type"] or "other"
    kinds = [ops.get(n, op_type_of(n)) if ops else op_type_of(n) for n in nodes]
    for main in _MAIN_OPS:
        if main in kinds:
            return main
    kinds = [k for k in kinds if k not in ("QuantizeLinear", "DequantizeLinear")] or kinds
    return kinds[0]


def group_times(table: Table, by: str = "op_type", *, model: onnx.ModelProto | None = None) -> Table:
    """Total median time per group: ``by`` is "op_type" (the layer's main ONNX op), "type" or "precision".

    Columns: group, median_ms, pct, layers. Sorted by time, largest first.
    """
    _check_table(table)
    if by not in ("op_type", "type", "precision"):
        raise DataError(f"cannot group timings by '{by}'", hint="use op_type, type or precision")
    ops = {n.name: n.op_type for n in model.graph.node} if model is not None else None
    sums: dict[str, list[float]] = {}
    for rec in table.records():
        key = layer_op(rec, ops) if by == "op_type" else (rec[by] or "unknown")
        acc = sums.setdefault(key, [0.0, 0])
        acc[0] += rec["median_ms"]
        acc[1] += 1
    total = sum(v[0] for v in sums.values())
    rows = sorted(((k, v[0], 100.0 * v[0] / total if total else 0.0, int(v[1])) for k, v in sums.items()),
                  key=lambda r: -r[1])
    return Table(("group", "median_ms", "pct", "layers"), tuple(rows))


def precision_counts(table: Table) -> dict[str, int]:
    """Number of layers per precision ("unknown" when not known)."""
    _check_table(table)
    out: dict[str, int] = {}
    for p in table.column("precision"):
        out[p or "unknown"] = out.get(p or "unknown", 0) + 1
    return out


def _main_node(rec: Mapping[str, Any]) -> str | None:
    """The node that names a layer's work: its first Conv/Gemm/MatMul-like node, else its first non-Q/DQ node."""
    nodes = list(rec["onnx_nodes"] or [])
    if not nodes:
        return None
    for main in _MAIN_OPS:
        for n in nodes:
            if op_type_of(n) == main:
                return n
    rest = [n for n in nodes if op_type_of(n) not in ("QuantizeLinear", "DequantizeLinear")]
    return (rest or nodes)[0]


def _ordinal_keys(table: Table) -> dict[str, str]:
    """Main ONNX node of each layer -> "Op#k": the k-th such node of that op type, by the number in its name."""
    mains = list(dict.fromkeys(m for m in (_main_node(r) for r in table.records()) if m))

    def number(item: tuple[int, str]) -> tuple[int, int]:
        i, n = item
        m = re.search(r"(\d+)$", n)
        return (int(m.group(1)) if m else i, i)

    counts: dict[str, int] = {}
    keys = {}
    for _, n in sorted(enumerate(mains), key=number):
        op = op_type_of(n)
        keys[n] = f"{op}#{counts.get(op, 0)}"
        counts[op] = counts.get(op, 0) + 1
    return keys


def compare_profiles(profiles: Mapping[str, Table], *, match: str = "auto") -> Table:
    """Match layers of several engines/profiles by the ONNX nodes they cover and put their times side by side.

    Layers that share an ONNX node in any profile fall in one group (so "Conv_5 + Add_6 + Relu_7" in one
    engine and "Conv_5" + "Add_6 + Relu_7" in another compare as one row). ``match``: "name" joins by
    ONNX node name; "op_order" by op type and rank ("the 3rd Conv"), for engines built from different
    exports of one network (e.g. a QAT export renumbers nodes); "auto" picks "name" when the profiles
    share at least half their nodes. Columns: group, onnx_nodes, ``<label>_ms`` per profile, delta_ms
    (last minus first) and speedup (first / last). Layers with no ONNX node match by layer name.
    """
    if len(profiles) < 2:
        raise DataError(f"comparing needs at least two profiles, got {len(profiles)}", hint="add another profile")
    for t in profiles.values():
        _check_table(t)
    labels = list(profiles)
    if match == "auto":
        sets = [{n for ns in t.column("onnx_nodes") for n in (ns or [])} for t in profiles.values()]
        shared = all(len(a & b) >= 0.5 * min(len(a), len(b)) for a in sets for b in sets if a and b)
        match = "name" if shared else "op_order"
    if match not in ("name", "op_order"):
        raise DataError(f"unknown match mode '{match}'", hint="use auto, name or op_order")
    keymaps = {label: _ordinal_keys(t) for label, t in profiles.items()} if match == "op_order" else None

    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    layer_keys: dict[str, list[tuple[list[str], Mapping[str, Any]]]] = {}
    for label, table in profiles.items():
        entries = []
        for rec in table.records():
            nodes = rec["onnx_nodes"] or []
            if keymaps is not None:
                main = _main_node(rec)
                keys = [keymaps[label][main]] if main else []
            else:
                keys = [f"node:{n}" for n in nodes]
            keys = keys or [f"layer:{rec['name']}"]
            for k in keys[1:]:
                union(keys[0], k)
            find(keys[0])
            entries.append((keys, rec))
        layer_keys[label] = entries

    groups: dict[str, dict[str, Any]] = {}
    for label in labels:
        for keys, rec in layer_keys[label]:
            root = find(keys[0])
            g = groups.setdefault(root, {"times": dict.fromkeys(labels, 0.0), "nodes": [], "names": {}})
            g["times"][label] += rec["median_ms"]
            for n in rec["onnx_nodes"] or []:
                if n not in g["nodes"]:
                    g["nodes"].append(n)
            if not is_reformat(rec["name"], rec["type"]):
                best = g["names"].get(label)
                if best is None or rec["median_ms"] > best[1]:
                    g["names"][label] = (rec["name"], rec["median_ms"])
    columns = ("group", "onnx_nodes", *[f"{lab}_ms" for lab in labels], "delta_ms", "speedup")
    rows = []
    for g in groups.values():
        name = next((g["names"][lab][0] for lab in labels if lab in g["names"]), None) or ", ".join(g["nodes"]) or "?"
        first, last = g["times"][labels[0]], g["times"][labels[-1]]
        rows.append((name, g["nodes"], *[g["times"][lab] for lab in labels], last - first,
                     first / last if last > 0 and first > 0 else None))
    return Table(columns, tuple(rows))


def profile_summary(profiles: Mapping[str, Table]) -> Table:
    """One row per profile: label, total_ms, layers, speedup vs the first, then layer counts per precision."""
    for t in profiles.values():
        _check_table(t)
    counts = {label: precision_counts(t) for label, t in profiles.items()}
    precisions = sorted({p for c in counts.values() for p in c}, key=lambda p: -PRECISION_RANK.get(p, -1))
    labels = list(profiles)
    base = total_ms(profiles[labels[0]]) if labels else 0.0
    rows = []
    for label in labels:
        tot = total_ms(profiles[label])
        rows.append((label, tot, len(profiles[label]), base / tot if tot > 0 else None,
                     *[counts[label].get(p, 0) for p in precisions]))
    return Table(("label", "total_ms", "layers", "speedup", *precisions), tuple(rows))


# ---------------------------------------------------------------------------------------------------------------
# timing tables on disk (derived artefacts: JSON, keyed by the caller, e.g. <cache_dir>/timings/<digest>-<label>.json)


def save_timings(table: Table, path: str | os.PathLike[str], **meta: Any) -> Path:
    """Write a timing table (and any JSON-able ``meta``: source, digest, iterations ...) atomically as JSON."""
    _check_table(table)
    return write_json(path, {"schema": "workbench-timings/1", "columns": list(table.columns),
                             "rows": [list(r) for r in table.rows], "meta": meta})


def load_timings(path: str | os.PathLike[str]) -> tuple[Table, dict[str, Any]]:
    """Read a table written by :func:`save_timings`: (table, meta)."""
    data, where = _load_json(path, "timing table")
    if not isinstance(data, dict) or data.get("schema") != "workbench-timings/1" or \
            tuple(data.get("columns", ())) != TIMING_COLUMNS:
        raise DataError(f"{where} is not a workbench timing table", hint="write it with workbench.profile.save_timings")
    return Table(TIMING_COLUMNS, tuple(tuple(r) for r in data["rows"])), dict(data.get("meta") or {})
