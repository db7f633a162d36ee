"""Load and validate a model from a path, bytes, a ModelProto or a bundled sample name.

Everything a user can hand us goes through :func:`load_model`, which raises only
:class:`~workbench.errors.ModelError` for bad input. External data is read from the model's folder and refused when
it points outside it.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from ..errors import ModelError
from ._util import copy_model, first_line
from .names import name_nodes
from .shapes import infer_into, weightless_skeleton
from .walk import sort_nodes

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "sample_models"


def sample_names() -> list[str]:
    """Names of the bundled sample models (``sample_models/*.onnx`` without the suffix)."""
    return sorted(p.stem for p in SAMPLES_DIR.glob("*.onnx"))


def sample_path(name: str) -> Path:
    """Path of a bundled sample model by name."""
    path = SAMPLES_DIR / f"{name}.onnx"
    if not path.is_file():
        raise ModelError(
            f"no sample model named '{name}' in {SAMPLES_DIR}",
            hint=f"use one of {sample_names()} or pass a path to an .onnx file",
        )
    return path


def load_model(
    source: str | os.PathLike[str] | bytes | onnx.ModelProto,
    *,
    check: bool = True,
    shapes: bool = True,
    names: bool = True,
) -> onnx.ModelProto:
    """Load a model from a path, bytes, a ModelProto or a sample name; validate it.

    External data is loaded from the model's folder and refused when it points outside it.
    Unnamed nodes are named (see :func:`name_nodes`) and shapes inferred, keeping symbolic dims.
    The caller's ModelProto is never modified: a copy is returned. Bad input raises :class:`ModelError`.
    The checker and shape inference run on a weightless skeleton of the graph, so their cost does not
    grow with the size of the weights.
    """
    if isinstance(source, onnx.ModelProto):
        model, where = copy_model(source), "the given ModelProto"
        _refuse_unloaded_external_data(model, where)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        model, where = _parse(source, "the given bytes"), "the given bytes"
        _refuse_unloaded_external_data(model, where)
    elif isinstance(source, (str, os.PathLike)):
        path = _resolve(source)
        model, where = _load_file(path), str(path)
    else:
        raise ModelError(
            f"cannot load a model from a {type(source).__name__}",
            hint="pass a path to an .onnx file, a sample name, the file's bytes or an onnx.ModelProto",
        )
    _validate(model, where)
    sort_nodes(model.graph)  # valid ONNX lists nodes in topological order; some exporters do not (ORT accepts it)
    if names:
        name_nodes(model)
    skeleton = _checked_skeleton(model, where) if check else None
    if shapes:
        infer_into(model, where, skeleton)
    return model


def _resolve(source: str | os.PathLike[str]) -> Path:
    """A path, or the bundled sample of that name when no such file exists."""
    text = os.fsdecode(source)
    if "\x00" in text:
        raise ModelError(f"invalid model path {text!r} (it contains a NUL byte)", hint="pass a valid file path")
    path = Path(text)
    if not path.exists() and os.sep not in text and "/" not in text:
        stem = text[:-5] if text.endswith(".onnx") else text
        if (SAMPLES_DIR / f"{stem}.onnx").is_file():
            return sample_path(stem)
        if path.suffix == "":
            raise ModelError(f"{text}: no such file and no sample model of that name",
                             hint=f"pass the path to an .onnx file, or a sample: {', '.join(sample_names())}")
    return path


def _parse(data: bytes | bytearray | memoryview, where: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(
            f"{where} is not an ONNX model (protobuf could not parse it: {first_line(exc)})",
            hint="check that the file is a complete .onnx export (not truncated, not a PyTorch .pt or a zip)",
        ) from exc
    if not model.HasField("graph"):
        raise ModelError(f"{where} is not an ONNX model (it has no graph)",
                         hint="check that the file is a complete .onnx export (not truncated, not another format)")
    return model


def _load_file(path: Path) -> onnx.ModelProto:
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not an ONNX file", hint="pass the .onnx file inside it")
    if not path.is_file():
        raise ModelError(f"model file not found: {path}", hint="check the path, or pass a sample name "
                         f"({', '.join(sample_names()) or 'none bundled'})")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ModelError(f"{path} is empty (0 bytes)", hint="export the model again; the file has no content")
            try:  # parse straight from the page cache: one copy of the weights instead of two
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # a file system without mmap: read it
                return _with_external_data(_parse(f.read(), str(path)), path)
            with mm:
                view = memoryview(mm)
                try:
                    model = _parse(view, str(path))
                finally:
                    view.release()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}", hint="check that the file exists and is readable") from exc
    return _with_external_data(model, path)


def _with_external_data(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    _load_external_data(model, path)
    return model


def _external_tensors(model: onnx.ModelProto) -> list[TensorProto]:
    """Tensors whose data lives in a side file: initializers and tensor attributes, subgraphs included."""
    found: list[TensorProto] = []
    _graph_external(model.graph, found)
    for f in model.functions:
        _nodes_external(f.node, found)
    return found


def _graph_external(g: onnx.GraphProto, found: list[TensorProto]) -> None:
    found += [t for t in g.initializer if t.data_location == TensorProto.EXTERNAL]
    for sparse in g.sparse_initializer:
        found += [t for t in (sparse.values, sparse.indices) if t.data_location == TensorProto.EXTERNAL]
    _nodes_external(g.node, found)


def _nodes_external(nodes: Iterable[onnx.NodeProto], found: list[TensorProto]) -> None:
    for n in nodes:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                if a.t.data_location == TensorProto.EXTERNAL:
                    found.append(a.t)
            elif a.type == onnx.AttributeProto.TENSORS:
                found += [t for t in a.tensors if t.data_location == TensorProto.EXTERNAL]
            elif a.type == onnx.AttributeProto.GRAPH:
                _graph_external(a.g, found)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _graph_external(sub, found)


def _refuse_unloaded_external_data(model: onnx.ModelProto, where: str) -> None:
    tensors = _external_tensors(model)
    if tensors:
        t = tensors[0]
        location = next((e.value for e in t.external_data if e.key == "location"), "?")
        raise ModelError(
            f"{where} refers to external data that is not loaded (tensor '{t.name}' lives in '{location}'"
            f"{f' and {len(tensors) - 1} more' if len(tensors) > 1 else ''})",
            hint="load the model from its .onnx path (its folder holds the data file), or call "
            "onnx.load_external_data_for_model(model, folder) first",
        )


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    tensors = _external_tensors(model)
    if not tensors:
        return
    base = path.resolve().parent
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        try:
            offset, length = int(info.get("offset") or 0), info.get("length")
            length = None if length in (None, "") else int(length)
        except ValueError as exc:
            raise ModelError(
                f"{path}: external data of tensor '{t.name}' has a non-numeric offset or length ({info})",
                hint="the model file is damaged; export the model again",
            ) from exc
        if not location or "\x00" in location or os.path.isabs(location):
            target = None
        else:
            target = (base / location).resolve()
        if target is None or not target.is_relative_to(base):
            raise ModelError(
                f"{path}: external data of tensor '{t.name}' points outside the model's folder ({location!r})",
                hint="external data must sit in the model's folder or below it; move the data file there "
                "and re-save the model with a relative location",
            )
        if not target.is_file():
            raise ModelError(
                f"{path}: external data file '{location}' of tensor '{t.name}' is missing",
                hint=f"copy '{location}' next to {path.name} (exporters save it beside the model)",
            )
        size = target.stat().st_size
        if offset < 0 or (length is not None and (length < 0 or offset + length > size)) or offset > size:
            raise ModelError(
                f"{path}: external data file '{location}' is too short for tensor '{t.name}' "
                f"(needs bytes {offset}..{offset + (length or 0)}, has {size})",
                hint="the data file is truncated or belongs to another export; export the model again",
            )
    from onnx.external_data_helper import load_external_data_for_model

    try:
        load_external_data_for_model(model, str(base))
    except Exception as exc:
        raise ModelError(f"{path}: cannot load external data: {first_line(exc)}",
                         hint="the data file is damaged or belongs to another export; export the model again") from exc
    for t in tensors:  # onnx leaves data_location=DEFAULT set explicitly; clear it so the bytes (and the
        t.ClearField("data_location")  # digest) equal those of the same model stored in one file


def _validate(model: onnx.ModelProto, where: str) -> None:
    """Raise ModelError for a model we cannot use (opset, IR version, empty graph, damaged text)."""
    supported = onnx.defs.onnx_opset_version()
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and op.version > supported:
            raise ModelError(
                f"{where} uses ONNX opset {op.version}, newer than the installed onnx {onnx.__version__} "
                f"supports (up to {supported})",
                hint="upgrade onnx (pip install -U onnx) or export the model with a lower opset",
            )
    if model.ir_version > onnx.IR_VERSION:
        raise ModelError(
            f"{where} has ONNX IR version {model.ir_version}, newer than the installed onnx {onnx.__version__} "
            f"reads (up to {onnx.IR_VERSION})",
            hint="upgrade onnx (pip install -U onnx) or export the model with an older exporter",
        )
    if len(model.graph.node) == 0:
        raise ModelError(f"{where} has an empty graph (no nodes)", hint="export the model again; nothing to run")
    bad = _bad_text(model)
    if bad is not None:
        raise ModelError(f"{where} has a name or text field that is not valid UTF-8: {bad[:80]!r}",
                         hint="the file is damaged; export the model again")


def _checked_skeleton(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Run onnx.checker on the weightless skeleton (see :func:`weightless_skeleton`) and return it."""
    skeleton = weightless_skeleton(model, where)
    try:
        onnx.checker.check_model(skeleton.SerializeToString())
    except Exception as exc:
        raise ModelError(
            f"{where} is not a valid ONNX model: {first_line(exc)}",
            hint="fix the exporter's output or load with check=False to inspect it anyway",
        ) from exc
    return skeleton


def _bad_text(model: onnx.ModelProto) -> str | None:
    """The first string field that is not valid UTF-8 (protobuf hands those back as bytes), else None."""
    texts: list[Any] = [model.producer_name, model.producer_version, model.domain, model.doc_string]
    texts += [op.domain for op in model.opset_import]
    for prop in model.metadata_props:
        texts += (prop.key, prop.value)
    for f in model.functions:
        texts += (f.name, f.domain)
        texts += f.input
        texts += f.output
        texts += f.attribute
        _node_texts(f.node, texts)
    _graph_texts(model.graph, texts)
    if bytes not in set(map(type, texts)):  # one pass in C; the loop below only runs for a damaged file
        return None
    return next(t for t in texts if isinstance(t, bytes)).decode("utf-8", "backslashreplace")


def _graph_texts(g: onnx.GraphProto, texts: list[Any]) -> None:
    texts += (g.name, g.doc_string)
    for vi in (*g.input, *g.output, *g.value_info):
        texts += (vi.name, vi.doc_string)
        t = vi.type.tensor_type
        if t.HasField("shape"):
            for d in t.shape.dim:
                texts += (d.dim_param, d.denotation)
    for t in g.initializer:
        texts += (t.name, t.doc_string)
        for e in t.external_data:
            texts += (e.key, e.value)
    _node_texts(g.node, texts)


def _node_texts(nodes: Iterable[onnx.NodeProto], texts: list[Any]) -> None:
    for n in nodes:
        texts += (n.name, n.op_type, n.domain, n.doc_string)
        texts += n.input
        texts += n.output
        for a in n.attribute:
            texts += (a.name, a.ref_attr_name, a.doc_string)
            if a.type == onnx.AttributeProto.GRAPH:
                _graph_texts(a.g, texts)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _graph_texts(sub, texts)
            elif a.type == onnx.AttributeProto.TENSOR:
                texts.append(a.t.name)
