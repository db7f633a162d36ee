"""Engine builds: ``build_engine`` (child process by default) and the equivalent ``trtexec`` command line.

The engine is written atomically with a metadata JSON beside it (``<engine>.json``), the builder's full log
(``<engine>.log``) and, when the model came as a ModelProto (a session's edited model), that model
(``<engine stem>.model.onnx``, the file the trtexec line names): model and recipe
digests, backend and version, shape profiles (and which were derived, and why), the engine's I/O
description (for buffer planning on a GPU), engine layers with the ONNX nodes they cover, build time
and size. Engines here are built ahead of time; running one needs a supported NVIDIA GPU
(:mod:`workbench.backends.trt_runtime`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from .backends.trt import import_backend, resolve_backend, run_job
from .backends.trt_profiles import ResolvedProfiles, profiles_to_json, resolve_profiles
from .backends.worker import run_in_child
from .cancel import Cancel, Progress, cancelled, report
from .errors import BuildError
from .fsio import atomic_write, cache_root, write_json
from .graph import load_model, model_bytes, sample_path, save_model, sha256_bytes
from .recipe import BuildSettings, ShapeProfile

__all__ = [
    "BuildResult",
    "build_engine",
    "trtexec_command",
    "default_cache_dir",
    "engine_dir",
    "list_engines",
    "read_engine_meta",
    "EngineMeta",
    "METADATA_SUFFIX",
    "LogSink",
    "beside_engine",
]

METADATA_SUFFIX = ".json"
LogSink = Callable[[str], None]


@dataclass(frozen=True)
class BuildResult:
    """What a build produced. ``layers`` counts engine layers (after fusion) when the builder reports them."""

    backend: str
    version: str
    engine_path: Path
    bytes: int
    seconds: float
    layers: int
    log: tuple[str, ...]
    metadata_path: Path
    profiles: tuple[ShapeProfile, ...] = ()
    derived_profiles: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    io: tuple[dict[str, Any], ...] = ()
    engine_layers: tuple[dict[str, Any], ...] = ()
    wall_seconds: float = 0.0
    in_process: bool = False
    trtexec: str = ""
    log_path: Path | None = None
    model_path: Path | None = None
    model_sha256: str = ""
    recipe_digest: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON: ``backend``, ``engine``, ``bytes``, ``seconds``, ``layers`` and the rest."""
        d = asdict(self)
        d["engine"] = str(self.engine_path)
        d["engine_path"] = str(self.engine_path)
        d["metadata_path"] = str(self.metadata_path)
        d["log_path"] = str(self.log_path) if self.log_path else None
        d["model_path"] = str(self.model_path) if self.model_path else None
        d["profiles"] = profiles_to_json(self.profiles)
        d["log"] = list(self.log[-50:])
        d.pop("extra")
        return d


def default_cache_dir() -> Path:
    """The workbench cache root (:func:`workbench.fsio.cache_root`): engines and timing caches live here."""
    return cache_root()


def engine_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<cache_dir>/engines``: where engines without an explicit path go."""
    return Path(cache_dir or default_cache_dir()) / "engines"


@dataclass(frozen=True)
class EngineMeta:
    """An engine in the cache, from its metadata JSON (``io``, ``profiles``, ``engine_layers`` as written there)."""

    path: str
    backend: str
    version: str
    bytes: int
    layers: int | None
    build_seconds: float
    opt_level: int | None
    created: str
    model_sha256: str
    recipe_digest: str | None
    io: tuple[dict[str, Any], ...] = ()
    profiles: tuple[dict[str, Any], ...] = ()
    engine_layers: tuple[dict[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """The engine's file name."""
        return Path(self.path).name


def read_engine_meta(meta_path: str | os.PathLike[str]) -> EngineMeta | None:
    """The :class:`EngineMeta` of one ``<engine>.json`` written by a build; None when it is unreadable, not ours,
    or its engine file is gone."""
    meta_path = Path(meta_path)
    try:
        m = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    engine = meta_path.with_name(meta_path.name[: -len(METADATA_SUFFIX)])
    if not (isinstance(m, dict) and m.get("workbench_engine") and engine.is_file()):
        return None
    return EngineMeta(
        path=str(engine), backend=str(m.get("backend")), version=str(m.get("version")),
        bytes=int(m.get("bytes") or 0), layers=m.get("layers"), build_seconds=float(m.get("build_seconds") or 0.0),
        opt_level=m.get("opt_level"), created=str(m.get("created", "")), model_sha256=str(m.get("model_sha256", "")),
        recipe_digest=m.get("recipe_digest"), io=tuple(m.get("io") or ()), profiles=tuple(m.get("profiles") or ()),
        engine_layers=tuple(m.get("engine_layers") or ()))


def list_engines(cache_dir: str | os.PathLike[str] | None = None) -> list[EngineMeta]:
    """The engines built into ``engine_dir(cache_dir)``, newest first; unreadable metadata is skipped."""
    folder = engine_dir(cache_dir)
    found = [read_engine_meta(p) for p in (folder.glob(f"*.engine{METADATA_SUFFIX}") if folder.is_dir() else ())]
    return sorted((e for e in found if e is not None), key=lambda e: e.created, reverse=True)


class _ProgressTracker:
    """Turns IProgressMonitor phases into ``progress(step, steps, phase)`` of the top-level phase; a sub-phase
    reports the top-level's last step with its own name."""

    def __init__(self, sink: Progress | None) -> None:
        self.sink = sink
        self.top: str | None = None
        self.done, self.total = 0, 0

    def __call__(self, event: dict[str, Any]) -> None:
        if self.sink is None or event.get("event") != "progress":
            return
        phase, parent = event.get("phase"), event.get("parent")
        if self.top is None and parent is None:
            self.top = phase
        if phase == self.top:
            self.total = max(int(event.get("steps") or 0), 1)
            self.done = min(int(event.get("step") or 0), self.total)
            report(self.sink, self.done, self.total, str(phase))
        elif parent is not None:
            report(self.sink, self.done, self.total, str(phase))


def _settings_key(model_sha: str, settings: BuildSettings, backend: str, version: str,
                  profiles: ResolvedProfiles) -> str:
    data = {"model": model_sha, "backend": backend, "version": version, "opt": settings.opt_level,
            "ws": settings.workspace_mb, "cc": list(settings.compute_capabilities),
            "profiles": profiles_to_json(profiles.profiles)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def build_engine(
    model: onnx.ModelProto | str | os.PathLike[str],
    settings: BuildSettings | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    cancel: Cancel = None,
    log: LogSink | None = None,
    in_process: bool = False,
    recipe_digest: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timing_cache_path: str | os.PathLike[str] | None = None,
    name: str | None = None,
    source: str | os.PathLike[str] | None = None,
) -> BuildResult:
    """Build a serialised engine from ``model`` with ``settings``; write it (and its metadata) atomically.

    Runs in a child process unless ``in_process`` (or ``settings.in_process``). ``progress(done, total, phase)``
    gets the top-level builder phase's steps (a sub-phase repeats them with its own name), ``log(line)`` each
    builder log line; ``name`` names the cached engine file. ``source``: the file an in-memory ``model`` holds
    unchanged (a session's unedited model), named in the metadata and the trtexec line instead of a copy of the
    model written beside the engine. Raises :class:`BuildError` (parse error naming the node,
    builder failure, crash with the signal, timeout, cancel); nothing is half-written.
    """
    settings = settings or BuildSettings()
    if not isinstance(model, onnx.ModelProto):
        source = model
    source = Path(source) if source is not None else None
    model = load_model(model)
    if source is not None and not source.exists():
        source = sample_path(str(source))
    backend = resolve_backend(settings.backend)
    version = str(getattr(import_backend(backend), "__version__", "unknown"))
    resolved = resolve_profiles(model, settings.profiles)
    data = model_bytes(model)
    model_sha = sha256_bytes(data)
    key = _settings_key(model_sha, settings, backend, version, resolved)
    stem = (name or (source.stem if source else (model.graph.name or "model"))).replace(os.sep, "_")
    engine_path = Path(out) if out is not None else engine_dir(cache_dir) / f"{stem}-{key[:16]}.engine"
    if source is not None and engine_path.resolve() == source.resolve():
        raise BuildError(f"refusing to write the engine over the model {source}", hint="choose another -o path")
    timing_cache = None
    if settings.timing_cache:
        timing_cache = str(timing_cache_path or Path(cache_dir or default_cache_dir()) / "timing"
                           / f"{backend}-{version}.cache")
    in_process = in_process or settings.in_process
    lines: list[str] = []
    tracker = _ProgressTracker(progress)

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "log":
            line = f"[{event.get('level')}] {event.get('message')}"
            lines.append(line)
            if log is not None:
                log(line)
        tracker(event)

    start = time.perf_counter()
    # a model given as a file is built from a temp copy; one given in memory is written beside the engine, so the
    # trtexec line names a file that holds exactly what was built (removed again if the build fails)
    model_path = beside_engine(engine_path, ".model.onnx")
    written = source is None and not model_path.exists()
    try:
        with tempfile.TemporaryDirectory(prefix="wb-build-") as tmp:
            if source is not None:
                model_path = Path(tmp) / "model.onnx"
            save_model(model, model_path)
            job = {"backend": backend, "model_path": str(model_path), "engine_path": str(engine_path),
                   "build": True, "support": False, "profiles": profiles_to_json(resolved.profiles),
                   "opt_level": settings.opt_level, "workspace_mb": settings.workspace_mb,
                   "timing_cache": timing_cache, "compute_capabilities": list(settings.compute_capabilities)}
            what = f"the {backend} build of {source or 'the model'}"
            if in_process:
                result = run_job(job, on_event, lambda: cancelled(cancel))
                if result.get("cancelled"):
                    raise BuildError(f"{what} was cancelled", hint="nothing was written; start it again when ready")
            else:
                try:
                    result = run_in_child(job, timeout=settings.timeout_s, on_event=on_event, cancel=cancel,
                                          what=what)
                except BuildError:
                    _remove_partial(engine_path, timing_cache)  # a killed child may leave its temp files
                    raise
        wall = time.perf_counter() - start
        _raise_for_failure(result, what, lines)
    except BaseException:
        if written:
            model_path.unlink(missing_ok=True)
        raise

    notes = tuple(resolved.notes) + tuple(result.get("notes", ()))
    engine_bytes = int(result["bytes"])
    engine_sha = _sha256_file(engine_path)
    metadata = {
        "workbench_engine": 1,
        "engine": engine_path.name,
        "engine_sha256": engine_sha,
        "bytes": engine_bytes,
        "backend": backend,
        "version": version,
        "model_sha256": model_sha,
        "model_path": str(source) if source else None,
        "recipe_digest": recipe_digest,
        "profiles": profiles_to_json(resolved.profiles),
        "derived_profiles": list(resolved.derived),
        "notes": list(notes),
        "opt_level": settings.opt_level,
        "workspace_mb": settings.workspace_mb,
        "compute_capabilities": list(settings.compute_capabilities),
        "io": result.get("io", []),
        "layers": result.get("layers"),
        "network_layers": result.get("network_layers"),
        "engine_layers": result.get("engine_layers", []),
        "build_seconds": result.get("seconds"),
        "in_process": in_process,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    metadata_path = write_json(engine_path.with_name(engine_path.name + METADATA_SUFFIX), metadata)
    log_path = atomic_write(engine_path.with_name(engine_path.name + ".log"), "".join(f"{line}\n" for line in lines))
    return BuildResult(
        backend=backend, version=version, engine_path=engine_path, bytes=engine_bytes,
        seconds=float(result.get("seconds") or 0.0), layers=int(result.get("layers") or 0), log=tuple(lines),
        metadata_path=metadata_path, profiles=resolved.profiles, derived_profiles=resolved.derived, notes=notes,
        io=tuple(result.get("io", [])), engine_layers=tuple(result.get("engine_layers", [])), wall_seconds=wall,
        in_process=in_process, model_sha256=model_sha, recipe_digest=recipe_digest, log_path=log_path,
        model_path=source or model_path,
        trtexec=trtexec_command(source or model_path, settings, engine_path=engine_path,
                                profiles=resolved.profiles, backend=backend, timing_cache=timing_cache),
    )


def beside_engine(engine_path: str | os.PathLike[str], suffix: str) -> Path:
    """``<engine stem><suffix>`` in the engine's folder (the names trtexec_command gives its exports)."""
    engine = Path(engine_path)
    stem = engine.name[: -len(".engine")] if engine.name.endswith(".engine") else engine.name
    return engine.with_name(stem + suffix)


def _remove_partial(*targets: str | os.PathLike[str] | None) -> None:
    """Delete the temp files an interrupted atomic write leaves beside its target (``.<name>.*.tmp``)."""
    for target in targets:
        if target:
            path = Path(target)
            for tmp in path.parent.glob(f".{path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _raise_for_failure(result: dict[str, Any], what: str, lines: Sequence[str]) -> None:
    if not result.get("parsable"):
        errors = result.get("errors") or []
        if errors:
            first = errors[0]
            node = f"node '{first['node']}'" + (f" ({first['op']})" if first.get("op") else "")
            more = f" and {len(errors) - 1} more error(s)" if len(errors) > 1 else ""
            raise BuildError(f"{what}: the ONNX parser rejected {node}: {first.get('reason') or first['desc']}{more}",
                             hint="run `workbench check MODEL` for every unsupported node and what to do about it")
        raise BuildError(f"{what}: the ONNX parser rejected the model", hint="run `workbench check MODEL`")
    if not result.get("built"):
        errs = [line for line in lines if line.startswith("[error]") or line.startswith("[internal_error]")]
        detail = "; ".join(errs[-3:]) or "no error was logged"
        raise BuildError(f"{what}: the builder produced no engine ({detail})",
                         hint="check the shape profiles (--shapes) and run `workbench check MODEL`")


def trtexec_command(
    model_path: str | os.PathLike[str],
    settings: BuildSettings | None = None,
    *,
    engine_path: str | os.PathLike[str] = "model.engine",
    profiles: Sequence[ShapeProfile] | None = None,
    backend: str | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    model: onnx.ModelProto | None = None,
) -> str:
    """The equivalent command line for a user with a device: ``trtexec`` (TensorRT) or ``tensorrt_rtx``.

    Profiles default to ``settings.profiles`` completed with derived defaults when ``model`` is given.
    Strongly typed (precision from the graph), detailed profiling verbosity, layer info exported.
    """
    settings = settings or BuildSettings()
    backend = backend or (settings.backend if settings.backend != "auto" else "tensorrt")
    if profiles is None:
        profiles = resolve_profiles(model, settings.profiles).profiles if model is not None else settings.profiles
    engine = str(engine_path)
    stem = engine[: -len(".engine")] if engine.endswith(".engine") else engine
    args = ["tensorrt_rtx" if backend == "tensorrt-rtx" else "trtexec", f"--onnx={model_path}",
            f"--saveEngine={engine}"]
    if backend != "tensorrt-rtx":
        args.append("--stronglyTyped")
    dynamic = [p for p in profiles if not p.min == p.opt == p.max]
    if dynamic:
        for flag, attr in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
            args.append(f"{flag}=" + ",".join(f"{p.input}:{'x'.join(map(str, getattr(p, attr)))}" for p in profiles))
    args.append(f"--builderOptimizationLevel={settings.opt_level}")
    if settings.workspace_mb:
        args.append(f"--memPoolSize=workspace:{settings.workspace_mb}M")
    if timing_cache and backend != "tensorrt-rtx":
        args.append(f"--timingCacheFile={timing_cache}")
    args += ["--profilingVerbosity=detailed", f"--exportLayerInfo={stem}.layers.json",
             f"--exportProfile={stem}.profile.json"]
    return " ".join(shlex.quote(a) for a in args)

