"""Target-device jobs on a Dask cluster: build, check and profile where the engine will run.

A TensorRT engine must be built and timed on the GPU kind (and TensorRT version) it will run on. These calls send
the model's bytes to a worker chosen by the Dask *resources* it advertises (``workbench worker`` sets them from its
TensorRT and GPU: ``trt``, ``trt_rtx``, ``gpu``, ``trt_sm86`` ...; :func:`workbench.cluster.machine_resources`) and
bring back plain data only: the engine's bytes, its metadata JSON *as text*, the build log, a check report's dict,
a per-layer timing table's rows. A returned engine is vetted like any foreign file before it is imported into the
engine cache (size, header, sha256 against its metadata, the metadata a JSON object of this workbench) and then read
back through :func:`workbench.backends.trt_runtime.read_engine`. A worker's :class:`WorkbenchError` (no TensorRT,
no GPU, a parse error) comes back as type name, message and hint and is raised here as the same class.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import errors
from .build import METADATA_SUFFIX, BuildResult, build_engine, engine_dir
from .cluster import Cluster, ClusterError, connect, machine_info
from .errors import BuildError, WorkbenchError
from .fsio import atomic_write, write_json
from .graph import load_model, model_bytes, sha256_bytes
from .recipe import BuildSettings, ShapeProfile
from .table import Table

__all__ = ["RemoteTiming", "remote_build", "remote_check", "remote_profile", "default_resources", "vet_engine"]

_MAX_ENGINE = 8 << 30  # no engine this large comes back from a worker


# --- on the worker ---------------------------------------------------------------------------------------


def _where() -> dict[str, Any]:
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        address = None
    return {"worker": address, "pid": os.getpid(), "machine": machine_info().to_dict()}


def _failure(exc: WorkbenchError) -> dict[str, Any]:
    return {"ok": False, "type": type(exc).__name__, "message": exc.message, "hint": exc.hint, **_where()}


def _build_task(data: bytes, settings: BuildSettings, name: str | None, recipe_digest: str | None) -> dict[str, Any]:
    """Build on this worker; the engine, its metadata JSON text and the log come back as plain data."""
    try:
        model = onnx.load_from_string(data)
        with tempfile.TemporaryDirectory(prefix="wb-remote-") as tmp:
            r = build_engine(model, settings, out=Path(tmp) / f"{name or 'model'}.engine", name=name,
                             recipe_digest=recipe_digest)
            return {"ok": True, "engine": r.engine_path.read_bytes(), "metadata": r.metadata_path.read_text("utf-8"),
                    "log": list(r.log), "wall_seconds": r.wall_seconds, "trtexec": r.trtexec, **_where()}
    except WorkbenchError as exc:
        return _failure(exc)


def _check_task(data: bytes, shapes: Any, backend: str, opt_level: int) -> dict[str, Any]:
    from .check import check_model

    try:
        report = check_model(onnx.load_from_string(data), shapes=shapes, backend=backend, opt_level=opt_level)
        return {"ok": True, "report": report.to_dict(), **_where()}
    except WorkbenchError as exc:
        return _failure(exc)


def _profile_task(engine: bytes, metadata: str, feeds: dict[str, np.ndarray], iterations: int) -> dict[str, Any]:
    from .backends.trt_runtime import TrtEngine
    from .profile import from_layer_times

    try:
        with tempfile.TemporaryDirectory(prefix="wb-remote-") as tmp:
            path = Path(tmp) / "model.engine"
            path.write_bytes(engine)
            path.with_name(path.name + METADATA_SUFFIX).write_text(metadata, "utf-8")
            eng = TrtEngine(path, aggregate=from_layer_times)
            try:  # pragma: no cover - needs a supported NVIDIA GPU
                table = eng.profile(feeds, iterations=iterations)
                latency = eng.latency(feeds, iterations=max(iterations, 10))
            finally:
                eng.close()
        return {"ok": True, "columns": list(table.columns), "rows": [list(r) for r in table.rows],
                "latency": latency, **_where()}  # pragma: no cover
    except WorkbenchError as exc:
        return _failure(exc)


# --- here ------------------------------------------------------------------------------------------------


def _raise_failure(result: Mapping[str, Any], what: str) -> None:
    if result.get("ok"):
        return
    cls = getattr(errors, str(result.get("type")), None)
    cls = cls if isinstance(cls, type) and issubclass(cls, WorkbenchError) else WorkbenchError
    raise cls(f"{what} on worker {result.get('worker')}: {result.get('message')}", hint=str(result.get("hint") or ""))


def default_resources(cluster: Cluster, backend: str) -> dict[str, float]:
    """``trt_rtx=1`` for TensorRT-RTX, ``trt=1`` for TensorRT; for ``auto`` whichever a worker offers (TensorRT
    first, as locally)."""
    if backend == "tensorrt-rtx":
        return {"trt_rtx": 1}
    if backend == "tensorrt":
        return {"trt": 1}
    offered = {k for w in cluster.workers() for k in w.resources}
    return {"trt": 1} if "trt" in offered or "trt_rtx" not in offered else {"trt_rtx": 1}


def vet_engine(data: Any, metadata_text: Any, where: str) -> dict[str, Any]:
    """The metadata of an engine that came from elsewhere, once its bytes match it: raises :class:`BuildError`
    naming ``where`` for a wrong type, size, header or digest, or metadata that is not this workbench's JSON."""
    if not isinstance(data, bytes) or not isinstance(metadata_text, str):
        raise BuildError(f"the engine from {where} is not bytes + metadata text", hint="check the worker's workbench")
    if len(data) > _MAX_ENGINE or len(data) < 64 or data[1:4] != b"trt":
        raise BuildError(f"the engine from {where} is not a TensorRT engine ({len(data)} bytes, wrong header)",
                         hint="check the worker's TensorRT install; rebuild")
    try:
        meta = json.loads(metadata_text)
    except json.JSONDecodeError as exc:
        raise BuildError(f"the engine metadata from {where} is not JSON ({exc})", hint="rebuild") from exc
    if not isinstance(meta, dict) or meta.get("workbench_engine") != 1:
        raise BuildError(f"the engine metadata from {where} is not this workbench's", hint="rebuild")
    if meta.get("bytes") != len(data) or meta.get("engine_sha256") != hashlib.sha256(data).hexdigest():
        raise BuildError(f"the engine from {where} does not match its metadata (size or sha256)",
                         hint="it was damaged on the way; build it again")
    return meta


def remote_build(
    cluster: Cluster | str,
    model: onnx.ModelProto | str | os.PathLike[str],
    settings: BuildSettings | None = None,
    *,
    resources: Mapping[str, float] | None = None,
    out: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    recipe_digest: str | None = None,
) -> BuildResult:
    """Build ``model`` on a worker offering ``resources`` (default :func:`default_resources`) and import the
    engine here: written atomically to ``out`` or the engine cache with its metadata (``built_on``: the worker and
    its machine) and log, exactly like a local build's. ``BuildResult.extra``: ``worker``, ``machine``."""
    c = connect(cluster)
    settings = settings or BuildSettings()
    loaded = load_model(model)
    data = model_bytes(loaded)
    resources = dict(resources) if resources is not None else default_resources(c, settings.backend)
    stem = (name or (Path(model).stem if not isinstance(model, onnx.ModelProto) else loaded.graph.name or "model"))
    stem = stem.replace(os.sep, "_")
    result = c.submit(_build_task, data, settings, stem, recipe_digest, resources=resources).result()
    where = f"worker {result.get('worker')}"
    _raise_failure(result, f"the build of {stem}")
    meta = vet_engine(result.get("engine"), result.get("metadata"), where)
    if meta.get("model_sha256") != sha256_bytes(data):
        raise BuildError(f"the engine from {where} was built from another model", hint="build it again")
    engine: bytes = result["engine"]
    path = Path(out) if out is not None else \
        engine_dir(cache_dir) / f"{stem}-{meta['engine_sha256'][:16]}.engine"
    meta.update(engine=path.name, model_path=None if isinstance(model, onnx.ModelProto) else str(model),
                built_on={"worker": result.get("worker"), "machine": result.get("machine"),
                          "resources": resources})
    atomic_write(path, engine)
    metadata_path = write_json(path.with_name(path.name + METADATA_SUFFIX), meta)
    lines = tuple(str(x) for x in result.get("log") or ())
    log_path = atomic_write(path.with_name(path.name + ".log"), "".join(f"{line}\n" for line in lines))
    from .backends.trt_runtime import read_engine

    read_engine(path)  # the imported file passes the same checks as any engine the workbench loads
    profiles = tuple(ShapeProfile(p["input"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
                     for p in meta.get("profiles") or ())
    return BuildResult(
        backend=str(meta.get("backend")), version=str(meta.get("version")), engine_path=path, bytes=len(engine),
        seconds=float(meta.get("build_seconds") or 0.0), layers=int(meta.get("layers") or 0), log=lines,
        metadata_path=metadata_path, profiles=profiles, derived_profiles=tuple(meta.get("derived_profiles") or ()),
        notes=tuple(meta.get("notes") or ()), io=tuple(meta.get("io") or ()),
        engine_layers=tuple(meta.get("engine_layers") or ()), wall_seconds=float(result.get("wall_seconds") or 0.0),
        trtexec=str(result.get("trtexec") or ""), log_path=log_path,
        model_path=None if isinstance(model, onnx.ModelProto) else Path(model), model_sha256=str(meta["model_sha256"]),
        recipe_digest=recipe_digest, extra={"worker": result.get("worker"), "machine": result.get("machine")})


def remote_check(cluster: Cluster | str, model: onnx.ModelProto | str | os.PathLike[str], *, shapes: Any = None,
                 backend: str = "auto", opt_level: int = 3, resources: Mapping[str, float] | None = None) -> Any:
    """:func:`workbench.check.check_model` on a worker offering ``resources``; a CheckReport (``worker`` set)."""
    from .check import CheckReport

    c = connect(cluster)
    data = model_bytes(load_model(model))
    resources = dict(resources) if resources is not None else default_resources(c, backend)
    result = c.submit(_check_task, data, shapes, backend, opt_level, resources=resources).result()
    _raise_failure(result, "the TensorRT check")
    report = CheckReport(**{k: v for k, v in dict(result["report"]).items()
                            if k in CheckReport.__dataclass_fields__})
    report.worker = result.get("worker")  # type: ignore[attr-defined]
    report.machine = result.get("machine")  # type: ignore[attr-defined]
    return report


@dataclass(frozen=True)
class RemoteTiming:
    """Per-layer TensorRT timings of an engine measured on a worker's GPU, its latency statistics and where."""

    table: Table
    latency: dict[str, float] | None
    worker: str | None
    machine: dict[str, Any] | None


def remote_profile(cluster: Cluster | str, engine: BuildResult | str | os.PathLike[str],
                   feeds: Mapping[str, np.ndarray], *, resources: Mapping[str, float] | None = None,
                   iterations: int = 20) -> RemoteTiming:
    """Per-layer TensorRT timings (IProfiler) of an engine on a worker with a supported GPU. A worker without a GPU
    answers :class:`~workbench.errors.BackendUnavailable`."""
    from .backends.trt_runtime import read_engine

    c = connect(cluster)
    path = engine.engine_path if isinstance(engine, BuildResult) else Path(engine)
    file = read_engine(path)
    if not file.trusted:
        raise BuildError(f"{path} has no metadata from this workbench", hint="build it with workbench (or remote_build)")
    if resources is None:
        resources = {"gpu": 1, **default_resources(c, str(file.metadata.get("backend")))}
    metadata = json.dumps(file.metadata)
    arrays = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
    result = c.submit(_profile_task, file.data, metadata, arrays, iterations, resources=resources).result()
    _raise_failure(result, f"profiling {path.name}")
    if not isinstance(result.get("columns"), list) or not isinstance(result.get("rows"), list):
        raise ClusterError(f"the profile from worker {result.get('worker')} has no table", hint="run it again")
    table = Table(tuple(result["columns"]), tuple(tuple(r) for r in result["rows"]))
    return RemoteTiming(table=table, latency=result.get("latency"), worker=result.get("worker"),
                        machine=result.get("machine"))
