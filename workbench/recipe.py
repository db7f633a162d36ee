"""The session recipe: everything a user decided, as frozen dataclasses and plain JSON.

Standard library only. JSON shape::

    {"schema_version": 1, "model": {"path": ..., "sha256": ...} | absent,
     "node_names": {"<index>": "<name>"}, "edits": [{"kind": ..., ...}],
     "calibration": {...} | absent, "build": {...} | absent}

A recipe with no ``model`` is a template that applies to any model. ``to_json()`` is canonical
(sorted keys, fixed indent), so a recipe is diffable and its ``digest()`` stable. Derived artefacts
(calibration scales, engines, timings) are never inline: they are caches keyed by digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import RecipeError

__all__ = [
    "SCHEMA_VERSION",
    "EDIT_KINDS",
    "Edit",
    "ModelRef",
    "FoldConstants",
    "FuseBatchNorm",
    "RemoveIdentity",
    "RemoveDeadNodes",
    "DequantizeIntegerOps",
    "FoldConstantIf",
    "RemoveNode",
    "BypassNode",
    "ReplaceNode",
    "InsertNode",
    "RenameNode",
    "RenameTensor",
    "ExtractSubgraph",
    "SetShapes",
    "SplitSharedDims",
    "FreezeInput",
    "AddOutputs",
    "ConvertPrecision",
    "Quantize",
    "ShapeProfile",
    "BuildSettings",
    "CalibrationSettings",
    "Preprocessing",
    "Recipe",
    "edit_from_dict",
]

SCHEMA_VERSION = 1
EDIT_KINDS: dict[str, type[Edit]] = {}

Dim = typing.Union[int, str, None]  # noqa: UP007 - evaluated at runtime by the JSON reader


def _register(cls: type[Edit]) -> type[Edit]:
    EDIT_KINDS[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class Edit:
    """Base of every edit; subclasses set ``kind`` and are registered in :data:`EDIT_KINDS`."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON types, with the edit's ``kind``."""
        return {"kind": self.kind, **_plain(dataclasses.asdict(self))}


# --- whole-graph clean-ups -------------------------------------------------------------------------


@_register
@dataclass(frozen=True)
class FoldConstants(Edit):
    """Fold constant subgraphs with onnx-graphsurgeon's folder (evaluated by ONNX Runtime)."""

    kind: ClassVar[str] = "fold_constants"


@_register
@dataclass(frozen=True)
class FuseBatchNorm(Edit):
    """Fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm."""

    kind: ClassVar[str] = "fuse_batchnorm"


@_register
@dataclass(frozen=True)
class RemoveIdentity(Edit):
    """Remove Identity nodes (and Dropout in inference)."""

    kind: ClassVar[str] = "remove_identity"


@_register
@dataclass(frozen=True)
class RemoveDeadNodes(Edit):
    """Remove nodes whose outputs reach no graph output."""

    kind: ClassVar[str] = "remove_dead_nodes"


@_register
@dataclass(frozen=True)
class DequantizeIntegerOps(Edit):
    """Turn ONNX Runtime integer ops (DynamicQuantizeLinear, ConvInteger, MatMulInteger, DynamicQuantizeLSTM)
    back into float ops TensorRT can parse."""

    kind: ClassVar[str] = "dequantize_integer_ops"


@_register
@dataclass(frozen=True)
class FoldConstantIf(Edit):
    """Replace ``If`` nodes whose condition is constant by the branch taken."""

    kind: ClassVar[str] = "fold_constant_if"


# --- surgical edits ---------------------------------------------------------------------------------


@_register
@dataclass(frozen=True)
class RemoveNode(Edit):
    """Remove a node and everything downstream of it (which cannot run without it).

    Disconnecting a graph output is an error unless ``drop_outputs`` (then those outputs go too).
    """

    kind: ClassVar[str] = "remove_node"
    node: str = ""
    drop_outputs: bool = False


@_register
@dataclass(frozen=True)
class BypassNode(Edit):
    """Remove a node and connect its ``input_index``-th input to its consumers.

    If the node's output is a graph output, the input's producer takes over the output's name instead.
    """

    kind: ClassVar[str] = "bypass_node"
    node: str = ""
    input_index: int = 0


@_register
@dataclass(frozen=True)
class ReplaceNode(Edit):
    """Change a node's op type and/or attributes (``None`` values delete an attribute)."""

    kind: ClassVar[str] = "replace_node"
    node: str = ""
    op: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@_register
@dataclass(frozen=True)
class InsertNode(Edit):
    """Insert a single-input, single-output node after ``tensor``; consumers read its output.

    ``name`` defaults to ``<op>_after_<tensor>``. After a graph output, the new node's output keeps the
    output's name and the original tensor becomes ``<tensor>_pre_<name>``.
    """

    kind: ClassVar[str] = "insert_node"
    tensor: str = ""
    op: str = ""
    name: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)


@_register
@dataclass(frozen=True)
class RenameNode(Edit):
    """Give a node a new (unique) name."""

    kind: ClassVar[str] = "rename_node"
    node: str = ""
    new_name: str = ""


@_register
@dataclass(frozen=True)
class RenameTensor(Edit):
    """Rename a tensor everywhere it appears (producers, consumers, subgraphs, graph inputs/outputs)."""

    kind: ClassVar[str] = "rename_tensor"
    tensor: str = ""
    new_name: str = ""


@_register
@dataclass(frozen=True)
class ExtractSubgraph(Edit):
    """Keep only the subgraph between ``inputs`` and ``outputs`` (tensor names)."""

    kind: ClassVar[str] = "extract"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@_register
@dataclass(frozen=True)
class SetShapes(Edit):
    """Set graph input shapes; a dim is an int (static), a string (symbolic) or None (dynamic, unnamed)."""

    kind: ClassVar[str] = "set_shapes"
    shapes: dict[str, tuple[Dim, ...]] = field(default_factory=dict)


@_register
@dataclass(frozen=True)
class SplitSharedDims(Edit):
    """Give each repeated symbolic dim of an input its own name (``[1, 3, 'x', 'x']`` -> ``[1, 3, 'x', 'x_3']``):
    TensorRT demands dims that share a name be equal. ``inputs`` empty: every graph input."""

    kind: ClassVar[str] = "split_shared_dims"
    inputs: tuple[str, ...] = ()


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


@_register
@dataclass(frozen=True)
class FreezeInput(Edit):
    """Replace graph input ``input`` by a constant initializer holding ``value`` (a number or nested list, in the
    input's dtype); an ``If`` whose condition now comes from constants only gets that condition as a constant,
    so ``fold_constant_if`` can fold it."""

    kind: ClassVar[str] = "freeze_input"
    input: str = ""
    value: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _frozen(self.value))  # hashable, and equal after a JSON round trip


@_register
@dataclass(frozen=True)
class AddOutputs(Edit):
    """Mark intermediate tensors as extra graph outputs."""

    kind: ClassVar[str] = "add_outputs"
    tensors: tuple[str, ...] = ()


# --- precision ---------------------------------------------------------------------------------------


@_register
@dataclass(frozen=True)
class ConvertPrecision(Edit):
    """Run ``nodes`` (empty: every eligible node) in fp16/bf16 through Cast nodes; ``keep`` stays fp32.

    ``guard`` keeps overflow-prone ops (flagged by the precision module) in fp32 unless listed in ``nodes``.
    """

    kind: ClassVar[str] = "convert_precision"
    precision: str = "fp16"
    nodes: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    keep_io_types: bool = True
    guard: bool = True


@_register
@dataclass(frozen=True)
class Quantize(Edit):
    """Insert Q/DQ (int8/fp8) where ``target`` fuses them; ``scales`` is the digest of a scale cache file.

    ``target``: ``tensorrt`` (symmetric int8, Q/DQ on weighted ops' inputs) or ``onnxruntime`` (uint8
    activations, Q/DQ around each weighted op so ONNX Runtime's CPU provider runs integer kernels). The field is
    written only when it is not ``tensorrt``, so recipes from before it existed keep their bytes and digest.
    """

    kind: ClassVar[str] = "quantize"
    TARGETS: ClassVar[tuple[str, ...]] = ("tensorrt", "onnxruntime")
    dtype: str = "int8"
    nodes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    method: str = "entropy"
    per_channel: bool = True
    scales: str = ""
    target: str = "tensorrt"
    methods: dict[str, str] = field(default_factory=dict)  # {tensor: method}: per-tensor choice over ``method``
    float_heads: bool = True  # output heads stay float (precision.qdq rule 8); written only when False

    def __post_init__(self) -> None:
        if self.target not in self.TARGETS:
            raise RecipeError(f"quantize edit: unknown target {self.target!r}",
                              hint=f"target is one of {list(self.TARGETS)}")

    def __hash__(self) -> int:  # ``methods`` is a dict: hash its sorted items
        return hash((self.dtype, self.nodes, self.exclude, self.method, self.per_channel, self.scales, self.target,
                     tuple(sorted(self.methods.items())), self.float_heads))

    def to_dict(self) -> dict[str, Any]:
        """JSON types; the default target and an empty ``methods`` are left out (older recipes keep their digest)."""
        out = super().to_dict()
        if self.target == "tensorrt":
            del out["target"]
        if not self.methods:  # written only when used: older recipes keep their bytes and digest
            del out["methods"]
        if self.float_heads:  # the default; older recipes (heads quantized then) replay with float heads
            del out["float_heads"]
        return out


# --- settings ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """The model a recipe is pinned to."""

    path: str
    sha256: str


@dataclass(frozen=True)
class ShapeProfile:
    """Min/opt/max shape of one input for a TensorRT optimisation profile."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuildSettings:
    """How to build an engine. ``backend``: auto | tensorrt | tensorrt-rtx."""

    backend: str = "auto"
    profiles: tuple[ShapeProfile, ...] = ()
    opt_level: int = 3
    workspace_mb: int | None = None
    timing_cache: bool = True
    compute_capabilities: tuple[str, ...] = ()
    in_process: bool = False
    timeout_s: float = 1800.0


@dataclass(frozen=True)
class Preprocessing:
    """How files become model inputs (:mod:`workbench.data`), recorded so a calibration can be replayed.

    ``kind``: image | audio | tokens. Image: ``size`` (height, width; empty keeps the file's), ``layout``
    NCHW | NHWC, ``channels`` RGB | BGR | GRAY, ``scale`` (pixel values 0-255 times this), ``mean``/``std``
    per channel (after scaling), ``dtype``; ``resize`` stretch | letterbox (keep the aspect ratio, pad with
    ``pad`` 0-255, at the top-left or ``center``-ed: YOLO-style models), ``crop_from`` (height, width: resize
    to that, then centre-crop ``size``), ``resample`` bilinear | bicubic | lanczos | nearest, ``append_channel``
    (a constant channel added after the normalisation: M-LSD's RGB + 1.0). Audio: ``sample_rate`` (resampled
    to), ``chunk`` (samples per chunk; 0 = whole files). Tokens: ``length`` (padded/cut to). The key names are
    the corpus manifest's. The image geometry keys are written only when set, so older recipes keep their digest.
    """

    kind: str = "image"
    size: tuple[int, ...] = ()
    layout: str = "NCHW"
    channels: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    dtype: str = "float32"
    sample_rate: int = 0
    chunk: int = 0
    length: int = 0
    resize: str = "stretch"
    pad: int = 114
    center: bool = False
    crop_from: tuple[int, ...] = ()
    resample: str = "bilinear"
    append_channel: float | None = None

    KINDS: ClassVar[tuple[str, ...]] = ("image", "audio", "tokens")
    RESIZES: ClassVar[tuple[str, ...]] = ("stretch", "letterbox")
    RESAMPLES: ClassVar[tuple[str, ...]] = ("bilinear", "bicubic", "lanczos", "nearest")
    OPTIONAL: ClassVar[tuple[str, ...]] = ("resize", "pad", "center", "crop_from", "resample", "append_channel")

    def __post_init__(self) -> None:
        checks = [(self.kind in self.KINDS, f"kind {self.kind!r}", f"one of {list(self.KINDS)}"),
                  (self.layout in ("NCHW", "NHWC"), f"layout {self.layout!r}", "NCHW or NHWC"),
                  (self.channels in ("RGB", "BGR", "GRAY"), f"channels {self.channels!r}", "RGB, BGR or GRAY"),
                  (len(self.size) in (0, 2), f"size {list(self.size)}", "[height, width]"),
                  (not self.std or all(s != 0 for s in self.std), f"std {list(self.std)}", "non-zero values"),
                  (self.resize in self.RESIZES, f"resize {self.resize!r}", f"one of {list(self.RESIZES)}"),
                  (self.resample in self.RESAMPLES, f"resample {self.resample!r}", f"one of {list(self.RESAMPLES)}"),
                  (0 <= self.pad <= 255, f"pad {self.pad}", "a pixel value 0-255"),
                  (len(self.crop_from) in (0, 2), f"crop_from {list(self.crop_from)}", "[height, width]"),
                  (not (self.resize == "letterbox" or self.crop_from) or bool(self.size),
                   f"{'crop_from ' + str(list(self.crop_from)) if self.crop_from else 'resize letterbox'} without a "
                   "size", "a size [height, width] (CLI --size HxW)"),
                  (not (self.resize == "letterbox" and self.crop_from), "crop_from with resize 'letterbox'",
                   "either a letterbox or a centre crop"),
                  (not self.crop_from or not self.size or all(c >= s for c, s in zip(self.crop_from, self.size)),
                   f"crop_from {list(self.crop_from)} smaller than size {list(self.size)}",
                   "a crop_from at least the size (the image is resized to crop_from, then `size` is cut "
                   "from its centre)")]
        for ok, what, want in checks:
            if not ok:
                raise RecipeError(f"preprocessing: {what} is not valid", hint=f"use {want}")

    def to_dict(self) -> dict[str, Any]:
        """The keys that matter for ``kind`` (what the corpus manifests write)."""
        keys = {"image": ("size", "layout", "channels", "scale", "mean", "std", "dtype"),
                "audio": ("sample_rate", "chunk", "dtype"), "tokens": ("length", "dtype")}[self.kind]
        out = {"kind": self.kind, **{k: _plain(getattr(self, k)) for k in keys}}
        if self.kind == "image":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            out.update({k: _plain(getattr(self, k)) for k in self.OPTIONAL if getattr(self, k) != defaults[k]})
        return out


@dataclass(frozen=True)
class CalibrationSettings:
    """How scales were (or will be) computed; ``data`` describes the source (path or label).

    ``preprocessing`` and ``sample_axes`` (per input: the axis that indexes samples, or None for an input
    every sample shares) and ``run_length`` (consecutive sample-axis entries per model run, as the user gave it;
    0: none) are written only when set, so older recipes keep their bytes and digest.
    """

    method: str = "entropy"
    percentile: float = 99.99
    num_bins: int = 2048
    samples: int = 0
    data: str = ""
    seed: int = 0
    preprocessing: Preprocessing | None = None
    sample_axes: dict[str, int | None] = field(default_factory=dict)
    run_length: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON types; preprocessing, sample axes and run length only when set."""
        out = _plain(dataclasses.asdict(self))
        if self.preprocessing is None:
            del out["preprocessing"]
        else:
            out["preprocessing"] = self.preprocessing.to_dict()
        if not self.sample_axes:
            del out["sample_axes"]
        if not self.run_length:
            del out["run_length"]
        return out


@dataclass(frozen=True)
class Recipe:
    """A model reference (or none: a template), node names given at load, edits in order, settings."""

    model: ModelRef | None = None
    node_names: dict[str, str] = field(default_factory=dict)
    edits: tuple[Edit, ...] = ()
    calibration: CalibrationSettings | None = None
    build: BuildSettings | None = None
    schema_version: int = SCHEMA_VERSION

    def with_edit(self, edit: Edit) -> Recipe:
        """This recipe with ``edit`` appended."""
        return dataclasses.replace(self, edits=(*self.edits, edit))

    def replace(self, **changes: Any) -> Recipe:
        """This recipe with the given fields replaced."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON types, as the recipe file stores them (no model when a template)."""
        out: dict[str, Any] = {"schema_version": self.schema_version, "edits": [e.to_dict() for e in self.edits]}
        if self.model is not None:
            out["model"] = _plain(dataclasses.asdict(self.model))
        if self.node_names:
            out["node_names"] = dict(self.node_names)
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        if self.build is not None:
            out["build"] = _plain(dataclasses.asdict(self.build))
        return out

    def to_json(self) -> str:
        """The recipe file's text (sorted keys, so equal recipes give equal text)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def digest(self) -> str:
        """sha256 of the canonical JSON, without the model's path (the same model anywhere: the same digest)."""
        data = self.to_dict()
        if "model" in data:
            data["model"] = {"sha256": data["model"]["sha256"]}
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "recipe") -> Recipe:
        """A recipe from :meth:`to_dict`'s form; anything malformed is a :class:`RecipeError` naming ``where``."""
        if not isinstance(data, Mapping):
            raise RecipeError(f"{where}: a recipe is a JSON object, got {type(data).__name__}",
                              hint='start from {"schema_version": 1, "edits": []}')
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise RecipeError(f"{where}: missing or non-integer schema_version", hint='add "schema_version": 1')
        if version > SCHEMA_VERSION:
            raise RecipeError(
                f"{where}: schema_version {version} is newer than this workbench reads ({SCHEMA_VERSION})",
                hint="upgrade the workbench (pip install -U onnx-trt-workbench)",
            )
        known = {"schema_version", "model", "node_names", "edits", "calibration", "build"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"{where}: unknown keys {unknown}", hint=f"a recipe has only {sorted(known)}")
        edits = data.get("edits", [])
        if not isinstance(edits, list):
            raise RecipeError(f"{where}: 'edits' must be a list", hint='write "edits": [{"kind": ...}, ...]')
        return cls(
            model=_build(ModelRef, data["model"], f"{where}.model") if data.get("model") is not None else None,
            node_names={str(k): str(v) for k, v in dict(data.get("node_names") or {}).items()},
            edits=tuple(edit_from_dict(e, where=f"{where}.edits[{i}]") for i, e in enumerate(edits)),
            calibration=_build(CalibrationSettings, data["calibration"], f"{where}.calibration")
            if data.get("calibration") is not None else None,
            build=_build(BuildSettings, data["build"], f"{where}.build") if data.get("build") is not None else None,
            schema_version=version,
        )

    @classmethod
    def from_json(cls, text: str, *, where: str = "recipe") -> Recipe:
        """A recipe from its file's text; bad JSON or content is a :class:`RecipeError` naming ``where``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"{where} is not valid JSON: {exc}", hint="fix the JSON syntax at the line named") from exc
        return cls.from_dict(data, where=where)


def edit_from_dict(data: Mapping[str, Any], *, where: str = "edit") -> Edit:
    """Read one edit ``{"kind": ..., ...}``; unknown kinds and fields raise :class:`RecipeError`."""
    if not isinstance(data, Mapping) or "kind" not in data:
        raise RecipeError(f"{where}: an edit is an object with a 'kind'", hint=f"kinds: {sorted(EDIT_KINDS)}")
    kind = data["kind"]
    cls = EDIT_KINDS.get(kind)
    if cls is None:
        raise RecipeError(f"{where}: unknown edit kind {kind!r}", hint=f"known kinds: {sorted(EDIT_KINDS)}")
    return _build(cls, {k: v for k, v in data.items() if k != "kind"}, where)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, for JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where}: expected an object for {cls.__name__}", hint="see the recipe JSON shape in the docs")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(f"{where}: unknown fields {unknown} for {cls.__name__}",
                          hint=f"{cls.__name__} takes {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        try:
            kwargs[name] = _convert(hints[name], value)
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"{where}.{name}: {exc}", hint=f"expected {hints[name]}") from exc
    try:
        return cls(**kwargs)
    except RecipeError as exc:  # a value the dataclass itself refuses (e.g. an unknown quantize target)
        raise RecipeError(f"{where}: {exc.message}", hint=exc.hint) from exc


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"{value!r} fits none of {args}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_convert(item, v) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {value!r}")
        return {str(k): _convert(args[1], v) if args else v for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, tp.__name__)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool, float):
        if type(value) is not tp:
            raise TypeError(f"expected {tp.__name__}, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise TypeError(f"expected null, got {value!r}")
        return None
    return value
