"""Save a model atomically (temp file + rename), with external data past the 2 GB protobuf limit; digests."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from ..errors import ModelError
from ..fsio import give_mode
from ._util import STRIPPABLE, prod

_PROTO_LIMIT = 2**31 - 1


def model_bytes(model: onnx.ModelProto) -> bytes:
    """Deterministic serialisation (used for digests and byte-identical replay)."""
    return model.SerializeToString(deterministic=True)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_model(model: onnx.ModelProto, path: Path, big: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_data: Path | None = None
    try:
        if big:
            data_name = f"{path.name}.data"
            fd, name = tempfile.mkstemp(prefix=f".{data_name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp_data = Path(name)
            _write_synced(tmp, _with_weights_outside(model, tmp_data, data_name))
            give_mode(tmp_data, path.parent / data_name)
            os.replace(tmp_data, path.parent / data_name)
        else:
            _write_synced(tmp, model_bytes(model))
        give_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if tmp_data is not None:
            tmp_data.unlink(missing_ok=True)
        raise


def copy_fields(src: Any, dst: Any, skip: str) -> None:
    """Copy every set field of a message except ``skip`` (generic, so new ONNX fields are not lost)."""
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _with_weights_outside(model: onnx.ModelProto, data_path: Path, data_name: str) -> bytes:
    """Stream the graph's large initializers into ``data_path``; the serialised model pointing at ``data_name``.

    The model is never copied whole (one tensor's bytes at a time), so models over 2 GB can be saved.
    """
    out = onnx.ModelProto()
    copy_fields(model, out, skip="graph")
    copy_fields(model.graph, out.graph, skip="initializer")
    offset = 0
    with open(data_path, "wb") as f:
        for t in model.graph.initializer:
            if not t.HasField("raw_data") or t.data_location == TensorProto.EXTERNAL:
                out.graph.initializer.append(t)
                continue
            raw = t.raw_data
            if len(raw) < 1024:
                out.graph.initializer.append(t)
                continue
            pad = -offset % 4096  # page-aligned, as onnx's own writer does, so runtimes can mmap it
            f.write(b"\0" * pad)
            offset += pad
            f.write(raw)
            stub = out.graph.initializer.add()
            copy_fields(t, stub, skip="raw_data")
            stub.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = stub.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            del raw
        f.flush()
        os.fsync(f.fileno())
    return out.SerializeToString(deterministic=True)


def _serialised_size(model: onnx.ModelProto) -> int:
    """About the serialised size, without serialising the weights (ByteSize() fails past 2 GB)."""
    size = 0
    for t in model.graph.initializer:
        itemsize = STRIPPABLE.get(t.data_type)
        if itemsize is not None and t.HasField("raw_data"):
            size += prod(t.dims) * itemsize + 64 + len(t.name)
        else:
            size += t.ByteSize()
    return size + sum(n.ByteSize() for n in model.graph.node) + 1024


def _write_synced(path: str | Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    protect: str | os.PathLike[str] | None = None,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` atomically (temp file + rename); refuse to overwrite ``protect`` (the source model).

    Models over 2 GB (or with ``external_data=True``) are saved with their large initializers in
    ``<name>.data`` beside it (written first, also atomically), streamed one tensor at a time.
    """
    path = Path(path)
    if protect is not None and path.resolve() == Path(protect).resolve():
        raise ModelError(
            f"refusing to overwrite the source model {path}",
            hint="choose another output path (the workbench never overwrites the user's model)",
        )
    big = _serialised_size(model) > _PROTO_LIMIT if external_data is None else external_data
    try:
        _write_model(model, path, big)
    except OSError as exc:
        raise ModelError(f"cannot write the model to {path}: {exc.strerror or exc}",
                         hint="choose a writable folder with enough free space") from exc
    return path
