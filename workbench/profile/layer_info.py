r"""TensorRT engine layer information: IEngineInspector JSON (trtexec ``--exportLayerInfo``) of both generations,
and the mapping of (fused) engine layer names to the ONNX nodes they cover.

TensorRT <= 10 writes ``Bindings`` and ``Format/Datatype``; TensorRT 11 structured ``I/O Tensors`` and separate
``Format`` and ``DataType``; the ``Metadata`` field (``[ONNX Layer: a]\x1f[ONNX Layer: b]``) names the ONNX nodes
when present. Reformat layers TensorRT inserts ("Reformatting CopyNode for Input Tensor 0 to X") are charged to
the ONNX nodes of the layer X they serve.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from ..backends.ort_profile import lowest_precision
from ..errors import DataError
from ..table import Table
from .jsonfile import load_json

__all__ = ["EngineTensor", "EngineLayer", "EngineInfo", "read_layer_info", "layer_details", "onnx_nodes_of",
           "metadata_nodes", "precision_of_format", "is_reformat", "base_name"]


@dataclass(frozen=True)
class EngineTensor:
    """One input or output of an engine layer: name, dims, memory format and data type (as TensorRT wrote them)."""

    name: str
    dims: tuple[int, ...] = ()
    format: str | None = None
    dtype: str | None = None

    @property
    def precision(self) -> str | None:
        """The data type, from the data type field, else from the format."""
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
        """The layer named ``name`` (KeyError when there is none)."""
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
    """ONNX node names from a layer's ``Metadata`` ("[ONNX Layer: a]" entries separated by 0x1f)."""
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
    layer_name = base_name(layer_name)
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
        i = users.pop() if len(users) == 1 else None
        if i is not None:
            layers[i]["onnx_nodes"].append(n.name)
            owner[n.name] = i
    order = {n.name: k for k, n in enumerate(model.graph.node)}
    for layer in layers:
        layer["onnx_nodes"].sort(key=lambda x: order.get(x, 0))


def read_layer_info(source: Any, *, model: onnx.ModelProto | None = None) -> EngineInfo:
    """Read IEngineInspector JSON (trtexec ``--exportLayerInfo``): a path, the parsed dict, or a list of layer
    dicts like the build metadata's ``engine_layers`` ({name, type, tactic, onnx_nodes}).

    With ``model``, each layer's ONNX nodes are checked against the model's node names and a file that names
    none of them raises :class:`DataError`.
    """
    data, where = load_json(source, "TensorRT layer info")
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


_PROFILE_SUFFIX = re.compile(r" \[profile \d+\]$")


def base_name(name: str) -> str:
    """A layer's name without the `` [profile N]`` TensorRT appends for optimisation profiles after the first."""
    return _PROFILE_SUFFIX.sub("", name)


def layer_details(info: EngineInfo) -> Table:
    """One row per engine layer: name, type, onnx_nodes, precision, tactic, input and output formats."""
    def fmt(ts: Sequence[EngineTensor]) -> list[str]:
        return [f"{t.name} {list(t.dims)} {t.format or ''}{' ' + t.dtype if t.dtype and t.dtype not in (t.format or '') else ''}"
                .strip() for t in ts]

    return Table(("name", "type", "onnx_nodes", "precision", "tactic", "inputs", "outputs"), tuple(
        (layer.name, layer.type, list(layer.onnx_nodes), layer.precision, layer.tactic, fmt(layer.inputs),
         fmt(layer.outputs)) for layer in info.layers))
