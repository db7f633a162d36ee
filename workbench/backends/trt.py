"""TensorRT and TensorRT-RTX: one code path for parsing and ahead-of-time engine builds.

``tensorrt`` (10.x/11.x) or ``tensorrt_rtx`` is chosen per call (``backend="auto"|"tensorrt"|"tensorrt-rtx"``;
auto prefers ``tensorrt``), never by an environment variable. Networks are strongly typed: precision lives in
the ONNX graph (Cast, Q/DQ). No precision builder flags, no INT8 calibrators.

:func:`run_job` does the work for one plain-JSON job (parse report and/or build) and reports log lines and
progress through an ``emit(event)`` callback, so the same code runs in-process or in the worker child
(:mod:`workbench.backends.worker`). Both modules import TensorRT only inside functions.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import BackendUnavailable, BuildError
from ..fsio import atomic_write

__all__ = [
    "BACKENDS",
    "ORT_INTEGER_OPS",
    "INSTALL_HINT",
    "backend_status",
    "resolve_backend",
    "import_backend",
    "run_job",
    "parse_layer_info",
    "Emit",
    "TrtBackend",
]

BACKENDS = ("tensorrt", "tensorrt-rtx")
_MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
_EXTRAS = {"tensorrt": "tensorrt", "tensorrt-rtx": "rtx"}
INSTALL_HINT = "pip install 'onnx-trt-workbench[rtx]' (TensorRT-RTX, builds without a GPU) " \
               "or 'onnx-trt-workbench[tensorrt]' on a machine with an NVIDIA GPU"

Emit = Callable[[dict[str, Any]], None]
_SEVERITY = {"INTERNAL_ERROR": "internal_error", "ERROR": "error", "WARNING": "warning", "INFO": "info",
             "VERBOSE": "verbose"}


def import_backend(name: str) -> ModuleType:
    """Import the Python module of a TensorRT flavour, or raise :class:`BackendUnavailable` with how to install it."""
    if name not in _MODULES:
        raise BackendUnavailable(f"unknown TensorRT backend '{name}'", hint=f"use auto or one of {list(BACKENDS)}")
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:
        raise BackendUnavailable(
            f"{name} is not installed here ({exc})",
            hint=f"pip install 'onnx-trt-workbench[{_EXTRAS[name]}]'"
            + ("" if name == "tensorrt-rtx" else ", or choose --backend tensorrt-rtx (builds without a GPU)"),
        ) from exc


def backend_status() -> dict[str, str | None]:
    """Each TensorRT flavour -> None when importable here, else why not."""
    out: dict[str, str | None] = {}
    for name in BACKENDS:
        try:
            mod = import_backend(name)
            out[name] = None if hasattr(mod, "Builder") else f"{_MODULES[name]} has no Builder (incomplete install)"
        except BackendUnavailable as exc:
            out[name] = exc.message
    return out


def resolve_backend(name: str = "auto") -> str:
    """``auto`` -> ``tensorrt`` when importable, else ``tensorrt-rtx``; a named backend must be importable."""
    if name == "auto":
        status = backend_status()
        for candidate in BACKENDS:
            if status[candidate] is None:
                return candidate
        raise BackendUnavailable("no TensorRT is installed (neither tensorrt nor tensorrt_rtx imports)",
                                 hint=INSTALL_HINT)
    import_backend(name)
    return name


def _version(trt: ModuleType) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def _network_flags(trt: ModuleType, backend: str) -> int:
    """Strongly typed networks: TensorRT-RTX networks always are; TensorRT 10 needs the creation flag."""
    if backend == "tensorrt-rtx":
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _make_logger(trt: ModuleType, emit: Emit, verbose: list[str]) -> Any:
    class Logger(trt.ILogger):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = _SEVERITY.get(getattr(severity, "name", str(severity).rsplit(".", 1)[-1]), "info")
            if level == "verbose":
                if msg.startswith("Layers:") or msg.startswith("Engine Layer Information"):
                    verbose.append(msg)
                return
            emit({"event": "log", "level": level, "message": msg})

    return Logger()


def _make_monitor(trt: ModuleType, emit: Emit, cancel: Callable[[], bool]) -> Any:
    class Monitor(trt.IProgressMonitor):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.phases: dict[str, tuple[str | None, int]] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.phases[phase_name] = (parent_phase, num_steps)
            emit({"event": "progress", "phase": phase_name, "parent": parent_phase, "step": 0, "steps": num_steps})

        def step_complete(self, phase_name: str, step: int) -> bool:
            parent, steps = self.phases.get(phase_name, (None, 0))
            emit({"event": "progress", "phase": phase_name, "parent": parent, "step": step + 1, "steps": steps})
            return not cancel()

        def phase_finish(self, phase_name: str) -> None:
            parent, steps = self.phases.pop(phase_name, (None, 0))
            emit({"event": "progress", "phase": phase_name, "parent": parent, "step": steps, "steps": steps,
                  "done": True})

    return Monitor()


def _dtype_name(trt: ModuleType, dt: Any) -> str:
    try:
        import numpy as np

        return np.dtype(trt.nptype(dt)).name
    except Exception:
        return getattr(dt, "name", str(dt)).lower()


def _io(trt: ModuleType, network: Any) -> list[dict[str, Any]]:
    out = []
    for mode, count, get in (("input", network.num_inputs, network.get_input),
                             ("output", network.num_outputs, network.get_output)):
        for i in range(count):
            t = get(i)
            out.append({"name": t.name, "mode": mode, "dtype": _dtype_name(trt, t.dtype),
                        "shape": [int(d) for d in t.shape], "shape_tensor": bool(t.is_shape_tensor)})
    return out


ORT_INTEGER_OPS = ("DynamicQuantizeLinear", "ConvInteger", "MatMulInteger")


def _reason(op: str, desc: str, where: str) -> str:
    """A readable reason for a parser error (TensorRT-RTX often says just 'false')."""
    if op in ORT_INTEGER_OPS:
        return f"{op} is an ONNX Runtime integer op; TensorRT has no kernel for it"
    if desc.strip() in ("", "false"):
        return f"{op or 'this op'} is not supported here (parser check {where})"
    return desc.strip()


def _parser_errors(parser: Any) -> list[dict[str, Any]]:
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = int(e.node())
        op = e.node_operator() if hasattr(e, "node_operator") else ""
        where = f"{e.file()}:{e.line()} {e.func()}".strip()
        errors.append({
            "code": getattr(e.code(), "name", str(e.code())),
            "node": e.node_name() or (f"#{node}" if node >= 0 else ""),
            "node_index": node,
            "op": op,
            "desc": e.desc(),
            "where": where,
            "reason": _reason(op, e.desc(), where),
        })
    return errors


def _support(trt: ModuleType, logger: Any, data: bytes, path: str) -> dict[str, Any]:
    """Per-node support through ``supports_model_v2`` (when the API has it) on a separate network."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not hasattr(parser, "supports_model_v2"):
        return {"supported": None, "subgraphs": [], "errors": []}
    supported = bool(parser.supports_model_v2(data, path))
    subgraphs = [{"supported": bool(parser.is_subgraph_supported(i)), "nodes": [int(n) for n in
                  parser.get_subgraph_nodes(i)]} for i in range(parser.num_subgraphs)]
    return {"supported": supported, "subgraphs": subgraphs, "errors": _parser_errors(parser)}


def _compute_capability(trt: ModuleType, text: str) -> Any:
    key = text.strip().upper().replace("SM_", "SM").replace(".", "")
    key = key if key.startswith("SM") or key == "CURRENT" else f"SM{key}"
    cc = getattr(trt, "ComputeCapability", None)
    names = [n for n in getattr(cc, "__members__", {}) if n != "NONE"]
    if cc is None or key not in names:
        raise BuildError(f"unknown compute capability '{text}'", hint=f"use one of {names or 'none (not RTX)'}")
    return getattr(cc, key)


def _configure(trt: ModuleType, backend: str, builder: Any, config: Any, job: Mapping[str, Any], notes: list[str]) -> Any:
    """Profiles, optimisation level, memory pool, compute capabilities, verbosity; returns the timing cache or None."""
    profiles = job.get("profiles") or []
    if profiles:
        prof = builder.create_optimization_profile()
        for p in profiles:
            prof.set_shape(p["input"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
        config.add_optimization_profile(prof)
    config.builder_optimization_level = int(job.get("opt_level", 3))
    if job.get("workspace_mb"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(job["workspace_mb"]) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    ccs = list(job.get("compute_capabilities") or [])
    if ccs:
        if backend != "tensorrt-rtx":
            notes.append("compute-capability targets apply to TensorRT-RTX only; ignored for TensorRT")
        else:
            config.num_compute_capabilities = len(ccs)
            for i, text in enumerate(ccs):
                config.set_compute_capability(_compute_capability(trt, text), i)
    cache_path = job.get("timing_cache")
    if not cache_path:
        return None
    if backend == "tensorrt-rtx":
        notes.append("timing cache: TensorRT-RTX ignores it (a no-op since RTX 1.2; RTX caches kernels at run time)")
        return None
    data = Path(cache_path).read_bytes() if Path(cache_path).is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    notes.append(f"timing cache {cache_path}: {'reused ' + str(len(data)) + ' bytes' if data else 'new'}")
    return cache


def _section(line: str, key: str) -> str:
    """The bracketed text after ``key: [`` (brackets balanced), or ''."""
    start = line.find(f"{key}: [")
    if start < 0:
        return ""
    i = start + len(key) + 3
    depth = 1
    for j in range(i, len(line)):
        depth += {"[": 1, "]": -1}.get(line[j], 0)
        if depth == 0:
            return line[i:j]
    return ""


_TENSOR = re.compile(r"\{\s*Name: (?P<name>[^,]*), Dimensions: \[(?P<dims>[^\]]*)\].*?"
                     r"Datatype: (?P<dtype>[^,]*), Format: (?P<format>[^}]*?)\s*\}")


def _tensors(text: str) -> list[dict[str, Any]]:
    return [{"Name": m["name"].strip(), "Dimensions": [int(d) for d in m["dims"].split(",") if d.strip()],
             "DataType": m["dtype"].strip(), "Format": m["format"].strip()} for m in _TENSOR.finditer(text)]


def parse_layer_info(text: str) -> list[dict[str, Any]]:
    """Engine layers from the builder's DETAILED ``Layers:`` log message.

    Each: ``name``, ``type``, ``tactic``, ``onnx_nodes`` (from ``Metadata``), and ``Inputs``/``Outputs``
    as inspector-style tensors ({Name, Dimensions, DataType, Format}) so precisions can be read.
    """
    layers = []
    for line in text.splitlines():
        if not line.startswith("Name: "):
            continue
        name = line[len("Name: "):].split(", LayerType: ", 1)[0]
        kind = re.search(r"LayerType: ([^,]*)", line)
        tactic = re.search(r"TacticName: ([^,]*)", line)
        meta = line.split("Metadata: ", 1)[1] if "Metadata: " in line else ""
        nodes = re.findall(r"\[ONNX Layer: ([^\]]+)\]", meta)
        layers.append({"name": name, "type": kind.group(1).strip() if kind else "",
                       "tactic": tactic.group(1).strip() if tactic else "", "onnx_nodes": nodes,
                       "Inputs": _tensors(_section(line, "Inputs")), "Outputs": _tensors(_section(line, "Outputs"))})
    return layers


def run_job(job: Mapping[str, Any], emit: Emit | None = None, cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Parse (and, when ``job["build"]``, build) one ONNX file with the job's backend; a plain-JSON result.

    Job keys: ``backend`` (resolved name), ``model_path``, ``build`` (bool), ``engine_path`` (written
    atomically when the build succeeds), ``profiles`` [{input, min, opt, max}], ``opt_level``,
    ``workspace_mb``, ``timing_cache`` (file path or None), ``compute_capabilities`` [str].
    """
    emit = emit or (lambda event: None)
    cancel = cancel or (lambda: False)
    backend = job["backend"]
    trt = import_backend(backend)
    verbose: list[str] = []
    logger = _make_logger(trt, emit, verbose)
    if hasattr(trt, "Logger") and hasattr(logger, "min_severity"):
        logger.min_severity = trt.Logger.VERBOSE  # pragma: no cover - only some bindings expose it
    model_path = str(job["model_path"])
    data = Path(model_path).read_bytes()
    result: dict[str, Any] = {"backend": backend, "version": _version(trt), "notes": []}

    emit({"event": "stage", "stage": "parse"})
    result["support"] = _support(trt, logger, data, model_path) if job.get("support", True) else None
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, backend))
    parser = trt.OnnxParser(network, logger)
    parsed = bool(parser.parse(data, model_path))
    result["parsable"] = parsed
    result["errors"] = _parser_errors(parser)
    result["network_layers"] = int(network.num_layers) if parsed else None
    result["io"] = _io(trt, network) if parsed else []
    result["built"] = False
    result["cancelled"] = False
    if not parsed or not job.get("build", True):
        return result

    emit({"event": "stage", "stage": "build"})
    config = builder.create_builder_config()
    try:
        cache = _configure(trt, backend, builder, config, job, result["notes"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BuildError(f"invalid build settings for {model_path}: {exc}",
                         hint="check the shape profiles and options against `workbench inspect`") from exc
    config.progress_monitor = _make_monitor(trt, emit, cancel)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    result["seconds"] = seconds
    if serialized is None:
        result["cancelled"] = bool(cancel())
        return result
    engine = bytes(memoryview(serialized))
    if cache is not None and job.get("timing_cache"):
        atomic_write(job["timing_cache"], bytes(memoryview(config.get_timing_cache().serialize())))
    if job.get("engine_path"):
        atomic_write(job["engine_path"], engine)
    layers = [layer for text in verbose for layer in parse_layer_info(text)]
    result.update(built=True, bytes=len(engine), engine_layers=layers,
                  layers=len(layers) if layers else result["network_layers"])
    return result


class TrtBackend:
    """The :class:`~workbench.backends.base.Backend` view of TensorRT: build, then run on a GPU.

    ``available()`` needs both a TensorRT module and a supported GPU, since a Backend's engine must run;
    building alone (no GPU) is :func:`workbench.build.build_engine`.
    """

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend
        self.name = "tensorrt" if backend == "auto" else backend

    def available(self) -> str | None:
        """None when this backend can build here, else why not."""
        try:
            resolve_backend(self.backend)
        except BackendUnavailable as exc:
            return f"{exc.message}; {exc.hint}"
        from .trt_runtime import gpu_status

        return gpu_status()

    def build(self, model: Any, settings: Any = None, *, capture: tuple[str, ...] = ()) -> Any:
        """Build in a worker child and load the engine on the GPU (BackendUnavailable without one)."""
        reason = self.available()
        if reason is not None:
            raise BackendUnavailable(f"the TensorRT backend cannot run here: {reason}",
                                     hint="use the onnxruntime backend on this machine; build engines with "
                                          "`workbench build` and run them where a supported GPU is")
        import tempfile  # pragma: no cover - GPU only from here on

        from ..graph import save_model
        from .ort import with_outputs
        from .trt_profiles import profiles_to_json, resolve_profiles
        from .trt_runtime import TrtEngine
        from .worker import run_in_child

        name = resolve_backend(self.backend)
        model = with_outputs(model, capture) if capture else model
        given = tuple(getattr(settings, "profiles", ()) or ())
        tmp = Path(tempfile.mkdtemp(prefix="wb-trt-"))
        save_model(model, tmp / "model.onnx")
        job = {"backend": name, "model_path": str(tmp / "model.onnx"), "engine_path": str(tmp / "model.engine"),
               "support": False, "profiles": profiles_to_json(resolve_profiles(model, given).profiles),
               "opt_level": int(getattr(settings, "opt_level", 3))}
        result = run_in_child(job, timeout=float(getattr(settings, "timeout_s", 1800.0)))
        if not result.get("built"):
            raise BuildError(f"the {name} build failed: {result.get('errors')}", hint="run `workbench check MODEL`")
        return TrtEngine(tmp / "model.engine", backend=name)
