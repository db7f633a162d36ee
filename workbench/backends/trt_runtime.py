"""The thin GPU runtime for built engines: load, plan buffers, run, per-layer timings, inspector JSON.

Running an engine needs a supported NVIDIA GPU. Everything that can be checked on a CPU lives in plain
functions and is tested here: reading an engine file (corrupted files, other versions, files that do not
come from this workbench warn: an engine is code), buffer/shape/dtype planning from the I/O description
stored in the engine's metadata JSON at build time, aggregation of ``IProfiler.report_layer_time`` calls,
latency percentiles. :class:`TrtEngine` does the GPU part (deserialize, allocate with cuda-python,
execute, IProfiler, IEngineInspector) and raises :class:`BackendUnavailable` where no GPU is present.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, BuildError, DataError
from ..table import Table
from .base import Feeds
from .trt import import_backend

__all__ = [
    "EngineTrustWarning",
    "EngineFile",
    "read_engine",
    "BufferPlan",
    "plan_buffers",
    "LayerTimes",
    "latency_stats",
    "gpu_status",
    "TrtEngine",
]

_RTX_MAGIC = b"vtrt"  # TensorRT-RTX plans start with b"vtrt"; TensorRT plans with another letter + b"trt"
_HEADER = 64


class EngineTrustWarning(UserWarning):
    """An engine file that this workbench did not build (no matching metadata): loading it runs its code."""


@dataclass(frozen=True)
class EngineFile:
    """An engine's bytes and its metadata JSON (``{}`` when the file did not come from this workbench)."""

    path: Path
    data: bytes
    metadata: dict[str, Any]
    trusted: bool


def read_engine(path: str | Path, *, backend_version: str | None = None) -> EngineFile:
    """Read and vet an engine file. Raises :class:`BuildError` naming the file when it is missing, truncated,
    not an engine, corrupted (sha256 differs from its metadata) or built by another TensorRT version
    (``backend_version``: the installed one; None skips that check). Warns when it has no metadata from us.
    """
    path = Path(path)
    if not path.is_file():
        raise BuildError(f"engine file {path} does not exist", hint="build it first (workbench build MODEL -o ENGINE)")
    data = path.read_bytes()
    if len(data) < _HEADER or data[1:4] != b"trt":
        raise BuildError(f"{path} is not a TensorRT engine (wrong header or truncated, {len(data)} bytes)",
                         hint="rebuild it with `workbench build`; an engine is not an ONNX file")
    meta_path = path.with_name(path.name + ".json")
    metadata: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            metadata = {}
    trusted = bool(metadata.get("workbench_engine"))
    if trusted:
        digest = hashlib.sha256(data).hexdigest()
        if metadata.get("engine_sha256") != digest:
            raise BuildError(f"engine file {path} is corrupted: its sha256 differs from {meta_path.name}",
                             hint="rebuild it with `workbench build` (the file changed after the build)")
        if backend_version and metadata.get("version") and metadata["version"] != backend_version:
            raise BuildError(
                f"engine file {path} was built with {metadata.get('backend')} {metadata['version']}; "
                f"the installed version is {backend_version}",
                hint="engines only load in the TensorRT version that built them: rebuild it with `workbench build`")
    else:
        warnings.warn(
            f"{path} was not built by this workbench (no matching metadata JSON): loading an engine runs code "
            "from it; only load engines you trust", EngineTrustWarning, stacklevel=2)
    return EngineFile(path, data, metadata, trusted)


@dataclass(frozen=True)
class BufferPlan:
    """One I/O tensor's buffer: shape for this run, numpy dtype, bytes (None until the runtime knows it)."""

    name: str
    mode: str
    dtype: str
    shape: tuple[int, ...] | None
    nbytes: int | None


def _profile_for(name: str, profiles: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((p for p in profiles if p["input"] == name), None)


def plan_buffers(
    io: Sequence[Mapping[str, Any]],
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    profiles: Sequence[Mapping[str, Any]] = (),
    output_shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[BufferPlan]:
    """Plan device buffers from the engine's I/O description (metadata ``io``) and the run's input shapes.

    Input dims that are -1 take the given shape (default: the profile's opt shape), which must lie within
    the profile's min..max; fixed dims must match. Outputs with -1 dims take ``output_shapes`` when given,
    else stay unknown (the GPU runtime reads them from the context after setting the input shapes).
    """
    input_shapes = dict(input_shapes or {})
    output_shapes = dict(output_shapes or {})
    names = {t["name"] for t in io if t["mode"] == "input"}
    unknown = sorted(set(input_shapes) - names)
    if unknown:
        raise DataError(f"the engine has no input(s) {unknown}", hint=f"its inputs are {sorted(names)}")
    plans = []
    for t in io:
        decl = tuple(int(d) for d in t["shape"])
        itemsize = np.dtype(t["dtype"]).itemsize
        shape: tuple[int, ...] | None
        if t["mode"] == "input":
            prof = _profile_for(t["name"], profiles)
            given = input_shapes.get(t["name"])
            if given is None:
                given = prof["opt"] if prof else decl
            shape = tuple(int(d) for d in given)
            if len(shape) != len(decl):
                raise DataError(f"input '{t['name']}' has rank {len(decl)} {list(decl)}, got shape {list(shape)}",
                                hint="give one dim per axis")
            for i, (d, s) in enumerate(zip(decl, shape)):
                if d >= 0 and d != s:
                    raise DataError(f"input '{t['name']}' dim {i} is fixed to {d} in the engine, got {s}",
                                    hint=f"use shape {list(decl)}")
                if d < 0 and prof and not prof["min"][i] <= s <= prof["max"][i]:
                    raise DataError(f"input '{t['name']}' dim {i} = {s} is outside the engine's profile "
                                    f"{prof['min'][i]}..{prof['max'][i]}",
                                    hint="rebuild with a wider --shapes profile or feed a shape inside it")
                if d < 0 and not prof:
                    raise DataError(f"input '{t['name']}' has a dynamic dim {i} but the engine has no profile for it",
                                    hint="rebuild with --shapes")
        else:
            given = output_shapes.get(t["name"])
            shape = tuple(int(d) for d in given) if given is not None else (decl if min(decl, default=0) >= 0 else None)
        nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize if shape is not None else None
        plans.append(BufferPlan(t["name"], t["mode"], t["dtype"], shape, nbytes))
    return plans


class LayerTimes:
    """Collects ``IProfiler.report_layer_time(layer_name, ms)`` calls: one list of samples per layer."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.order: list[str] = []

    def report_layer_time(self, layer_name: str, ms: float) -> None:
        """IProfiler callback: one sample of one layer."""
        if layer_name not in self.times:
            self.times[layer_name] = []
            self.order.append(layer_name)
        self.times[layer_name].append(float(ms))

    @property
    def iterations(self) -> int:
        """Samples collected for the most-sampled layer."""
        return max((len(v) for v in self.times.values()), default=0)

    def totals(self) -> list[float]:
        """Total ms per iteration (sum over layers of the i-th sample)."""
        return [sum(v[i] for v in self.times.values() if i < len(v)) for i in range(self.iterations)]


def latency_stats(samples_ms: Sequence[float], *, batch: int = 1) -> dict[str, float]:
    """min/mean/median/p90/p95/p99/max in ms and throughput (inferences per second at the mean latency)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise DataError("no latency samples", hint="run at least one iteration")
    pct = np.percentile(a, [50, 90, 95, 99])
    return {"min_ms": float(a.min()), "mean_ms": float(a.mean()), "median_ms": float(pct[0]),
            "p90_ms": float(pct[1]), "p95_ms": float(pct[2]), "p99_ms": float(pct[3]), "max_ms": float(a.max()),
            "throughput_per_s": float(batch * 1000.0 / a.mean()) if a.mean() > 0 else float("inf"),
            "samples": int(a.size)}


def gpu_status() -> str | None:
    """None when a CUDA device is usable here, else why not (shown as-is in the UI)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            return f"no supported NVIDIA GPU runtime: cuda-python is not installed ({exc})"
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or not count:
        name = getattr(err, "name", str(err))
        return f"no supported NVIDIA GPU here ({name}): engines can be built but not run"
    return None


def _check(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BuildError(f"CUDA error in {what}: {getattr(err, 'name', err)}", hint="check the GPU and driver")
    return rest[0] if len(rest) == 1 else rest


class TrtEngine:
    """A deserialised engine on the GPU. Construction fails with BackendUnavailable where no GPU is present."""

    def __init__(self, path: str | Path, *, backend: str | None = None,
                 aggregate: Callable[..., Table] | None = None) -> None:
        meta_backend = None
        probe = Path(path)
        if probe.is_file():
            with open(probe, "rb") as f:
                meta_backend = "tensorrt-rtx" if f.read(4) == _RTX_MAGIC else "tensorrt"
        self.backend = backend or meta_backend or "tensorrt-rtx"
        trt = import_backend(self.backend)
        self.file = read_engine(path, backend_version=str(getattr(trt, "__version__", "")))
        reason = gpu_status()
        if reason is not None:
            raise BackendUnavailable(f"cannot run {self.file.path}: {reason}",
                                     hint="copy the engine to a machine with a supported NVIDIA GPU, or use the "
                                          "ONNX Runtime backend here")
        self._trt = trt
        self._aggregate = aggregate
        self._logger = trt.Logger(trt.Logger.WARNING)  # pragma: no cover - GPU only from here on
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.file.data)
        if self.engine is None:
            raise BuildError(f"TensorRT could not deserialize {self.file.path}",
                             hint="rebuild the engine with the installed TensorRT version")
        self.context = self.engine.create_execution_context()
        self.io = self.file.metadata.get("io") or self._io()
        self._buffers: dict[str, tuple[int, int]] = {}

    def _io(self) -> list[dict[str, Any]]:  # pragma: no cover - GPU only
        trt, e = self._trt, self.engine
        out = []
        for i in range(e.num_io_tensors):
            name = e.get_tensor_name(i)
            mode = "input" if e.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
            out.append({"name": name, "mode": mode, "dtype": np.dtype(trt.nptype(e.get_tensor_dtype(name))).name,
                        "shape": list(e.get_tensor_shape(name))})
        return out

    def _alloc(self, name: str, nbytes: int) -> int:  # pragma: no cover - GPU only
        from cuda.bindings import runtime as cudart

        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:  # pragma: no cover - GPU only
        """Execute the engine once on ``feeds``; the outputs by name."""
        from cuda.bindings import runtime as cudart

        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        plans = plan_buffers(self.io, {k: v.shape for k, v in feeds.items()},
                             profiles=self.file.metadata.get("profiles", ()))
        for p in plans:
            if p.mode == "input":
                arr = np.ascontiguousarray(feeds[p.name], dtype=p.dtype)
                self.context.set_input_shape(p.name, arr.shape)
                ptr = self._alloc(p.name, arr.nbytes)
                _check(cudart.cudaMemcpy(ptr, arr.ctypes.data, arr.nbytes, h2d), "cudaMemcpy")
                self.context.set_tensor_address(p.name, ptr)
        outputs = {}
        for p in plans:
            if p.mode == "output":
                shape = tuple(self.context.get_tensor_shape(p.name))
                nbytes = int(np.prod(shape)) * np.dtype(p.dtype).itemsize
                self.context.set_tensor_address(p.name, self._alloc(p.name, nbytes))
                outputs[p.name] = np.empty(shape, dtype=p.dtype)
        if not self.context.execute_async_v3(0):
            raise BuildError(f"executing {self.file.path} failed", hint="see the TensorRT log")
        _check(cudart.cudaDeviceSynchronize(), "cudaDeviceSynchronize")
        for name, arr in outputs.items():
            _check(cudart.cudaMemcpy(arr.ctypes.data, self._buffers[name][0], arr.nbytes, d2h), "cudaMemcpy")
        return outputs

    def latency(self, feeds: Feeds, *, iterations: int = 100, warmup: int = 10) -> dict[str, float]:  # pragma: no cover
        """End-to-end latency statistics over ``iterations`` runs after ``warmup``."""
        for _ in range(warmup):
            self.run(feeds)
        samples = []
        for _ in range(iterations):
            t = time.perf_counter()
            self.run(feeds)
            samples.append((time.perf_counter() - t) * 1000.0)
        batch = int(next(iter(feeds.values())).shape[0]) if feeds else 1
        return latency_stats(samples, batch=batch)

    def layer_times(self, feeds: Feeds, *, iterations: int = 20) -> LayerTimes:  # pragma: no cover - GPU only
        """IProfiler samples of every layer over ``iterations`` runs."""
        trt = self._trt
        collected = LayerTimes()

        class Profiler(trt.IProfiler):  # type: ignore[name-defined]
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                collected.report_layer_time(layer_name, ms)

        self.run(feeds)  # warm-up without the profiler
        self.context.profiler = Profiler()
        for _ in range(iterations):
            self.run(feeds)
        self.context.profiler = None
        return collected

    def profile(self, feeds: Feeds, *, iterations: int = 20) -> Table:  # pragma: no cover - GPU only
        """Per-layer timings in the one timing schema; ``aggregate`` is ``workbench.profile.from_layer_times``."""
        if self._aggregate is None:
            raise BackendUnavailable("TrtEngine.profile needs an aggregate function",
                                     hint="pass aggregate=workbench.profile.from_layer_times")
        return self._aggregate(self.layer_times(feeds, iterations=iterations).times, self.inspector_json())

    def inspector_json(self) -> dict[str, Any]:  # pragma: no cover - GPU only
        """The engine inspector's layer information (the JSON trtexec --exportLayerInfo writes)."""
        trt = self._trt
        inspector = self.engine.create_engine_inspector()
        inspector.execution_context = self.context
        return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))

    def close(self) -> None:  # pragma: no cover - GPU only
        """Free the engine's device memory and stream."""
        try:
            from cuda.bindings import runtime as cudart

            for ptr, _ in self._buffers.values():
                cudart.cudaFree(ptr)
        finally:
            self._buffers.clear()
            self.context = None
            self.engine = None
