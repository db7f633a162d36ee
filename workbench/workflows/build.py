"""Build and profile workflows: engines (TensorRT or TensorRT-RTX, in a child process by default), the trtexec line
for the session's current model, per-layer profiles (ONNX Runtime here, trtexec JSON imported), comparisons, the
engine cache, and builds/profiles on a Dask cluster's target devices.

Each action takes the :class:`~workbench.session.Session` (``None`` where a model is optional: an imported
trtexec profile), ``progress(done, total, phase)`` and ``cancel``, and returns a frozen :class:`Result`. The shape
grammar (``NAME:1x3x224x224`` or ``NAME:MIN,OPT,MAX``) is :func:`parse_shapes`, offered here to the tabs and the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import onnx

from .. import remote
from ..backends.ort_profile import profile_model
from ..backends.trt import backend_status
from ..backends.trt_profiles import format_spec, parse_shapes, resolve_profiles
from ..backends.trt_runtime import gpu_status
from ..build import (
    METADATA_SUFFIX,
    BuildResult,
    EngineMeta,
    LogSink,
    build_engine,
    engine_dir,
    list_engines,
    read_engine_meta,
    trtexec_command,
)
from ..cluster import Cluster
from ..data import Dataset, load_data, timing_feeds
from ..errors import DataError
from ..fsio import read_json, write_json
from ..graph import save_model
from ..profile import (
    EngineInfo,
    compare_profiles,
    from_layer_times,
    from_trtexec,
    group_times,
    load_timings,
    precision_counts,
    profile_summary,
    read_layer_info,
    save_timings,
    total_ms,
)
from ..recipe import BuildSettings
from ..session import Session
from ..table import Table
from .base import Cancel, Progress, Result, report

__all__ = [
    "EngineBuild",
    "EngineEntry",
    "ImportedProfile",
    "OrtProfile",
    "ProfileComparison",
    "ProfileDefaults",
    "ProfileReport",
    "ProfileSummary",
    "RemoteProfile",
    "SavedProfile",
    "TrtexecLine",
    "backend_status",
    "build",
    "build_settings",
    "compare",
    "default_profiles",
    "engines",
    "format_spec",
    "gpu_status",
    "import_trtexec",
    "model_file",
    "open_engine",
    "parse_shapes",
    "profile",
    "profile_onnxruntime",
    "remote_build",
    "remote_profile",
    "saved_profiles",
    "summarize",
    "trtexec_line",
]

PathLike = str | os.PathLike[str]
Shapes = str | Sequence[str] | None
Data = Dataset | PathLike | None  # a Dataset, or a folder/.npz path read by the data layer

# --------------------------------------------------------------------------------------------------------------
# build


@dataclass(frozen=True)
class EngineBuild(BuildResult, Result):
    """What a build produced (the fields of :class:`workbench.build.BuildResult`); ``to_dict()`` is the CLI's JSON:
    ``backend``, ``engine``, ``bytes``, ``seconds``, ``layers`` and the rest."""

    @classmethod
    def of(cls, result: BuildResult) -> EngineBuild:
        """The same build as a workflow result."""
        return cls(**{f.name: getattr(result, f.name) for f in fields(result)})


@dataclass(frozen=True)
class ProfileDefaults(Result):
    """Shape profiles derived for the model's dynamic inputs: one SPEC per line, and the notes saying why."""

    specs: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class TrtexecLine(Result):
    """The equivalent command line for a device (``trtexec`` or ``tensorrt_rtx``) and the model file it names."""

    command: str
    model_path: Path
    backend: str


def build_settings(session: Session, *, shapes: Shapes = None, backend: str = "auto", opt_level: int = 3,
                   workspace_mb: int | None = None, timing_cache: bool = True,
                   compute_capabilities: Sequence[str] = (), in_process: bool = False,
                   timeout_s: float = 1800.0) -> BuildSettings:
    """Build settings for the session's current model; ``shapes`` SPECs are checked against it (:func:`parse_shapes`)."""
    text = shapes if not isinstance(shapes, str) or shapes.strip() else None
    return BuildSettings(backend=backend, profiles=parse_shapes(text, session.model) if text else (),
                         opt_level=opt_level, workspace_mb=workspace_mb, timing_cache=timing_cache,
                         compute_capabilities=tuple(compute_capabilities), in_process=in_process, timeout_s=timeout_s)


def default_profiles(session: Session) -> ProfileDefaults:
    """The profiles a build would derive for the current model's dynamic inputs (DataError when it cannot)."""
    resolved = resolve_profiles(session.model)
    return ProfileDefaults(specs=tuple(format_spec(p) for p in resolved.profiles if p.input in resolved.derived),
                           notes=tuple(resolved.notes))


def _stem(session: Session) -> str:
    return session.source_path.stem if session.source_path else (session.model.graph.name or "model")


def _source(session: Session) -> Path | None:
    """The user's file while nothing is edited (the file the session's model holds), else None."""
    return session.source_path if session.model is session.original else None


def model_file(session: Session) -> Path:
    """A file holding the session's current model: the user's file while nothing is edited, else the edited model
    written (atomically, once per edit history) into the session's cache."""
    source = _source(session)
    if source is not None:
        return source
    key = session.recipe.replace(build=None, calibration=None).digest()
    path = session.cache_dir / "models" / f"{_stem(session)}-{key[:16]}.onnx"
    if not path.is_file():
        save_model(session.model, path)
    return path


def _backend(settings: BuildSettings) -> str:
    """The backend an ``auto`` build would take here (the first installed one; tensorrt when none is)."""
    if settings.backend != "auto":
        return settings.backend
    return next((name for name, why in backend_status().items() if why is None), "tensorrt")


def trtexec_line(session: Session, settings: BuildSettings | None = None) -> TrtexecLine:
    """The trtexec (or tensorrt_rtx) command line that builds the session's current model with ``settings``."""
    settings = settings or BuildSettings()
    backend = _backend(settings)
    path = model_file(session)
    command = trtexec_command(path, settings, backend=backend, model=session.model,
                              engine_path=f"{_stem(session)}.engine")
    return TrtexecLine(command=command, model_path=path, backend=backend)


def build(session: Session, settings: BuildSettings | None = None, *, out: PathLike | None = None,
          timing_cache_path: PathLike | None = None, log: LogSink | None = None,
          progress: Progress | None = None, cancel: Cancel = None) -> EngineBuild:
    """Build an engine from the session's current model (crash-safe in a child process unless
    ``settings.in_process``). Its metadata and trtexec line name the user's file while nothing is edited, else the
    edited model, written beside the engine. The engine goes to ``out``, else into the session's engine cache; either
    way :func:`engines` lists it (the CLI's builds and the Build tab's alike). ``log(line)`` gets each builder log
    line. Raises :class:`~workbench.errors.BuildError`."""
    result = build_engine(session.model, settings, out=out, progress=progress, cancel=cancel, log=log,
                          recipe_digest=session.digest, cache_dir=session.cache_dir,
                          timing_cache_path=timing_cache_path, name=_stem(session), source=_source(session))
    return _registered(session, EngineBuild.of(result))


@dataclass(frozen=True)
class EngineEntry(EngineMeta, Result):
    """An engine built for the session's model, from its metadata JSON (the fields of
    :class:`workbench.build.EngineMeta`)."""


# engines built elsewhere (``out``/``-o``) for a session's model: {path: engine sha256}, in its engine folder
_REGISTRY = "elsewhere.json"


def _engine_sha(metadata_path: PathLike) -> str | None:
    try:
        sha = read_json(metadata_path).get("engine_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) else None


def _elsewhere(session: Session) -> dict[str, str]:
    """The engines outside the session's engine folder that its builds wrote, with the sha256 each had then."""
    try:
        found = read_json(engine_dir(session.cache_dir) / _REGISTRY).get("engines", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _registered(session: Session, result: EngineBuild) -> EngineBuild:
    """``result``, its engine recorded for :func:`engines` when it lies outside the session's engine folder."""
    folder = engine_dir(session.cache_dir)
    path = result.engine_path.resolve()
    sha = _engine_sha(result.metadata_path)
    if path.parent != folder.resolve() and sha is not None:
        write_json(folder / _REGISTRY, {"engines": {**_elsewhere(session), str(path): sha}})
    return result


def engines(session: Session | None) -> tuple[EngineEntry, ...]:
    """The engines built for the session's model, newest first: those in its engine cache and those its builds
    wrote elsewhere (``out``; still the engine that build wrote). The one list the Build and Profile tabs show."""
    if session is None:
        return ()
    try:
        found = list_engines(session.cache_dir)
    except OSError:
        found = []
    seen = {e.path for e in found}
    for path, sha in _elsewhere(session).items():
        if path in seen or _engine_sha(path + METADATA_SUFFIX) != sha:  # gone, or since overwritten by another build
            continue
        meta = read_engine_meta(path + METADATA_SUFFIX)
        if meta is not None:
            found.append(meta)
            seen.add(meta.path)
    found.sort(key=lambda e: e.created, reverse=True)
    return tuple(EngineEntry(**{f.name: getattr(e, f.name) for f in fields(e)}) for e in found)


# --------------------------------------------------------------------------------------------------------------
# profiles


@dataclass(frozen=True)
class ProfileSummary(Result):
    """One timing table in numbers: total (sum of per-layer medians), layer count, layers per precision, time per
    main ONNX op."""

    total_ms: float
    layers: int
    precisions: dict[str, int]
    by_op_type: dict[str, float]


def summarize(table: Table, model: onnx.ModelProto | None = None) -> ProfileSummary:
    """:class:`ProfileSummary` of ``table`` (op types read from ``model`` when given, else from node names)."""
    return ProfileSummary(total_ms=total_ms(table), layers=len(table), precisions=precision_counts(table),
                          by_op_type={r["group"]: r["median_ms"]
                                      for r in group_times(table, "op_type", model=model).records()})


@dataclass(frozen=True)
class OrtProfile(Result):
    """An ONNX Runtime per-node profile of the session's model: its label, table, the input shapes it ran with,
    the data used (its path, or "random") and where it was saved (None when not)."""

    label: str
    table: Table
    shapes: dict[str, list[int]]
    data: str
    optimize: bool
    iterations: int
    saved: Path | None = None


def _timings_dir(session: Session) -> Path:
    return Path(session.cache_dir) / "timings"


def _shapes(shapes: Shapes, model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    text = shapes if not isinstance(shapes, str) or shapes.strip() else None
    return {p.input: p.opt for p in parse_shapes(text, model)} if text else {}


def profile_onnxruntime(session: Session, *, data: Data = None, shapes: Shapes = None, batch: int = 1,
                        iterations: int = 20, optimize: bool = True, label: str | None = None, save: bool = False,
                        progress: Progress | None = None, cancel: Cancel = None) -> OrtProfile:
    """Time the session's current model per node with ONNX Runtime on this CPU.

    ``data``: a path (folder or .npz, read by the data layer) or a :class:`~workbench.data.Dataset` whose first
    ``batch`` samples are fed; else random data of ``shapes`` (SPECs; needed for dynamic dims other than the sample
    axis). ``save`` writes the table into the session's cache keyed by its digest (:func:`saved_profiles`).
    """
    model = session.model
    dims = _shapes(shapes, model)
    source = load_data(data, model) if isinstance(data, (str, os.PathLike)) else data
    feeds = timing_feeds(model, source, batch=batch, shapes=dims)
    label = label or f"ort-cpu{'' if optimize else '-noopt'}"
    table = profile_model(model, feeds, optimize=optimize, iterations=iterations, path=session.model_file,
                          progress=progress, cancel=cancel)
    used = {k: list(v.shape) for k, v in feeds.items()}
    saved = None
    if save:  # a derived artefact, keyed by the model's digest, reloaded by the next tab
        saved = save_timings(table, _timings_dir(session) / f"{session.digest}-{label}.json", source="onnxruntime",
                             label=label, digest=session.digest, optimize=optimize, iterations=iterations,
                             batch=batch, shapes=used)
    where = "random" if data is None else data.description if isinstance(data, Dataset) else str(data)
    return OrtProfile(label=label, table=table, shapes=used, data=where,
                      optimize=optimize, iterations=iterations, saved=saved)


@dataclass(frozen=True)
class SavedProfile(Result):
    """A timing table saved for the session's current model (same digest)."""

    label: str
    table: Table
    path: Path


def saved_profiles(session: Session) -> tuple[SavedProfile, ...]:
    """The ONNX Runtime profiles saved for the session's current model; unreadable files are skipped."""
    folder = _timings_dir(session)
    if not folder.is_dir():
        return ()
    found = []
    for path in sorted(folder.glob(f"{session.digest}-*.json")):
        try:
            table, meta = load_timings(path)
        except DataError:
            continue
        found.append(SavedProfile(label=str(meta.get("label") or path.stem), table=table, path=path))
    return tuple(found)


@dataclass(frozen=True)
class ImportedProfile(Result):
    """A TensorRT profile: its label, timing table, engine layer information (None without layer info) and each
    layer's tactic."""

    label: str
    table: Table
    info: EngineInfo | None = None
    tactics: dict[str, str | None] = field(default_factory=dict)


def import_trtexec(session: Session | None, layers: PathLike | None = None, profile: PathLike | None = None, *,
                   label: str | None = None, map_to_model: bool = False) -> ImportedProfile:
    """Read trtexec ``--exportLayerInfo`` (``layers``) and/or ``--exportProfile`` (``profile``) JSON. With
    ``map_to_model`` the layers are checked against the session's current model. ``label`` defaults to the file's
    name."""
    model = session.model if map_to_model and session is not None else None
    table = from_trtexec(layers, profile, model=model)
    info = read_layer_info(layers) if layers else None
    name = str(profile or layers or "trt").replace(os.sep, "/").rsplit("/", 1)[-1].split(".")[0]
    return ImportedProfile(label=label or name, table=table, info=info,
                           tactics={x.name: x.tactic for x in info.layers} if info else {})


def open_engine(session: Session | None, engine_path: str) -> ImportedProfile:
    """An engine built here as a profile: its layers (what TensorRT fused, mapped to ONNX nodes) with zero times,
    since no GPU runs them here."""
    entry = next((e for e in engines(session) if e.path == engine_path), None)
    if entry is None or not entry.engine_layers:
        raise DataError("no engine layers to show: build an engine in the Build tab first (its layer list comes from "
                        "the builder's detailed log)", hint="click Build engine, then come back")
    info = read_layer_info(list(entry.engine_layers))
    return ImportedProfile(label=f"engine:{entry.name}", table=from_layer_times({la.name: [0.0] for la in info.layers}, info),
                           info=info, tactics={la.name: la.tactic for la in info.layers})


@dataclass(frozen=True)
class ProfileComparison(Result):
    """Profiles side by side: one summary row per profile, and layers matched by ONNX node (``<label>_ms``)."""

    summary: Table
    layers: Table

    def to_dict(self) -> dict[str, Any]:
        """``summary`` and ``layers`` as lists of records."""
        return {"summary": self.summary.records(), "layers": self.layers.records()}


def compare(profiles: Mapping[str, Table]) -> ProfileComparison:
    """Compare two or more timing tables (:func:`workbench.profile.compare_profiles`)."""
    if len(profiles) < 2:
        raise DataError(f"select at least two profiles to compare (selected {len(profiles)})",
                        hint="ctrl/shift-click profiles in the compare list")
    return ProfileComparison(summary=profile_summary(profiles), layers=compare_profiles(profiles))


_LAYER_KEYS = ("name", "onnx_nodes", "type", "precision", "median_ms", "mean_ms", "pct")


@dataclass(frozen=True)
class ProfileReport(Result):
    """`workbench profile`: one timing table (ONNX Runtime or trtexec), its summary, an optional comparison with
    other trtexec profiles and the charts' HTML file."""

    source: str
    table: Table
    summary: ProfileSummary
    top: int
    ort: OrtProfile | None = None
    comparison: ProfileComparison | None = None
    html: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """``source``, ``layers`` [{name, onnx_nodes, type, precision, median_ms, mean_ms, pct}], ``total_ms``,
        ``by_op_type``, ``precisions``, ``top``; ``optimize``, ``iterations``, ``shapes``, ``data`` for ONNX Runtime;
        ``comparison`` {summary, layers} and ``html`` when made."""
        d: dict[str, Any] = {
            "source": self.source,
            "layers": [{k: r[k] for k in _LAYER_KEYS} for r in self.table.records()],
            "total_ms": self.summary.total_ms,
            "by_op_type": self.summary.by_op_type,
            "precisions": self.summary.precisions,
            "top": self.top,
        }
        if self.ort is not None:
            d.update(optimize=self.ort.optimize, iterations=self.ort.iterations, shapes=self.ort.shapes,
                     data=self.ort.data)
        if self.comparison is not None:
            d["comparison"] = self.comparison.to_dict()
        if self.html is not None:
            d["html"] = str(self.html)
        return d


def profile(session: Session | None, *, layers: PathLike | None = None, trt_profile: PathLike | None = None,
            data: Data = None, shapes: Shapes = None, batch: int = 1, iterations: int = 20, optimize: bool = True,
            label: str = "main", others: Sequence[tuple[str, PathLike, PathLike]] = (), top: int = 15,
            html: PathLike | None = None, progress: Progress | None = None, cancel: Cancel = None) -> ProfileReport:
    """Per-layer timings of the session's model with ONNX Runtime, or of trtexec files (``layers``/``trt_profile``;
    mapped to the session's model when there is one); ``others`` (label, layers, profile) are compared with it;
    ``html`` also writes the charts to a standalone file."""
    model = session.model if session is not None else None
    ort = None
    if layers or trt_profile:
        table = from_trtexec(layers, trt_profile, model=model)
        source = "trtexec"
    else:
        if session is None:
            raise DataError("nothing to profile: give a MODEL or --trt-layers/--trt-profile files",
                            hint="workbench profile digits_cnn  or  workbench profile --trt-layers G.json "
                                 "--trt-profile P.json")
        ort = profile_onnxruntime(session, data=data, shapes=shapes, batch=batch, iterations=iterations,
                                  optimize=optimize, progress=progress, cancel=cancel)
        table, source = ort.table, "onnxruntime"
    profiles = {label: table}
    for name, g, p in others:
        if name in profiles:
            raise DataError(f"--compare label '{name}' is used twice", hint="give every profile its own label")
        profiles[name] = from_trtexec(g, p, model=model)
    comparison = compare(profiles) if others else None
    written = None
    if html is not None:
        written = _write_html(table, model, html, top=top, title=f"workbench profile ({source})",
                              profiles=profiles if others else None)
    return ProfileReport(source=source, table=table, summary=summarize(table, model), top=top, ort=ort,
                         comparison=comparison, html=written)


def _write_html(table: Table, model: onnx.ModelProto | None, path: PathLike, *, top: int, title: str,
                profiles: Mapping[str, Table] | None = None) -> Path:
    """The Profile tab's charts (workbench.plots.profile) in one standalone HTML file (plotly loads only here)."""
    from ..plots import profile as plots

    figs = [plots.layer_bar(table, top=top), plots.group_bar(table, "op_type", model=model),
            plots.group_bar(table, "precision"), plots.time_treemap(table, model=model)]
    if profiles:
        figs += [plots.compare_totals(profiles), plots.precision_mix(profiles), plots.compare_layers(profiles, top=top)]
    return Path(plots.write_html(figs, Path(path), title=title))


# --------------------------------------------------------------------------------------------------------------
# target devices (a Dask cluster)


def remote_build(session: Session, cluster: Cluster | str, settings: BuildSettings | None = None, *,
                 resources: Mapping[str, float] | None = None, out: PathLike | None = None,
                 progress: Progress | None = None, cancel: Cancel = None) -> EngineBuild:
    """Build the session's current model on a worker offering ``resources`` (default: the backend's ``trt`` or
    ``trt_rtx``) and import the vetted engine into the session's engine cache. ``extra``: worker and machine."""
    report(progress, 0, 1, "building on the cluster")
    result = remote.remote_build(cluster, session.model, settings, resources=resources, out=out, cache_dir=session.cache_dir,
                                 name=_stem(session), recipe_digest=session.digest)
    report(progress, 1, 1, "imported")
    return _registered(session, EngineBuild.of(result))


@dataclass(frozen=True)
class RemoteProfile(remote.RemoteTiming, Result):
    """Per-layer TensorRT timings of an engine measured on a worker's GPU (:class:`workbench.remote.RemoteTiming`)."""


def remote_profile(session: Session, cluster: Cluster | str, engine: EngineBuild | PathLike, *, data: Data = None,
                   shapes: Shapes = None, batch: int = 1, iterations: int = 20,
                   resources: Mapping[str, float] | None = None, progress: Progress | None = None,
                   cancel: Cancel = None) -> RemoteProfile:
    """Time ``engine`` on a worker with a supported GPU (IProfiler), fed like :func:`profile_onnxruntime`."""
    model = session.model
    source = load_data(data, model) if isinstance(data, (str, os.PathLike)) else data
    feeds = timing_feeds(model, source, batch=batch, shapes=_shapes(shapes, model))
    report(progress, 0, 1, "profiling on the cluster")
    path = engine.engine_path if isinstance(engine, BuildResult) else Path(engine)
    timing = remote.remote_profile(cluster, path, feeds, resources=resources, iterations=iterations)
    report(progress, 1, 1, "done")
    return RemoteProfile(**{f.name: getattr(timing, f.name) for f in fields(timing)})

