"""Timing tables from TensorRT: trtexec ``--exportProfile`` JSON (with its ``--exportLayerInfo``) and IProfiler
``report_layer_time`` samples, in the one timing schema."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import onnx

from ..backends.ort_profile import timing_table
from ..errors import DataError
from ..table import Table
from .jsonfile import load_json
from .layer_info import EngineInfo, base_name, is_reformat, onnx_nodes_of, read_layer_info

__all__ = ["read_profile_json", "from_trtexec", "from_layer_times"]


def read_profile_json(source: Any) -> list[dict[str, Any]]:
    """Read trtexec ``--exportProfile`` JSON: [{name, median_ms, mean_ms, total_ms, pct}] in file order.

    The file is a list whose first entry is ``{"count": N}`` (profiled iterations), then one entry per layer
    with ``timeMs`` (total over N), ``averageMs``, ``medianMs`` and ``percentage``.
    """
    data, where = load_json(source, "TensorRT profile")
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
        if mean is None:
            raise DataError(f"{where}: layer '{entry['name']}' has no time (averageMs/timeMs)",
                            hint="export it with trtexec --exportProfile=P.json")
        median, total = entry.get("medianMs"), entry.get("timeMs")
        out.append({"name": str(entry["name"]), "median_ms": float(mean if median is None else median),
                    "mean_ms": float(mean), "total_ms": float(mean if total is None else total),
                    "pct": entry.get("percentage")})
    if not out:
        raise DataError(f"{where} holds no layer timings", hint="export it with trtexec --exportProfile=P.json "
                        "(--separateProfileRun profiles every layer)")
    return out


def _check_same_engine(info: EngineInfo, times: Iterable[str], where: str) -> None:
    names = {layer.name for layer in info.layers}
    times = list(times)
    missing = [n for n in times if n not in names and base_name(n) not in names]
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
        layer = by_name.get(t["name"]) or by_name.get(base_name(t["name"]))
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
        _check_same_engine(info, (str(r["name"]) for r in rows), "the profiler samples")
    return timing_table(_records(info, rows))
