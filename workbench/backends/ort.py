"""ONNX Runtime (CPU): reference runs, runs with intermediate tensors exposed, real INT8 of Q/DQ models."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import DataError, ModelError
from ..graph import model_bytes, tensor_infos
from ..table import Table
from .base import Feeds

__all__ = ["OrtBackend", "OrtEngine", "with_outputs", "check_feeds", "optimization_level", "has_float8", "is_ort_error"]


def is_ort_error(exc: BaseException) -> bool:
    """Whether ONNX Runtime itself raised ``exc`` about the model or the feeds (its own exception types, or the
    ValueError it raises for missing inputs); anything else (TypeError, KeyError...) is our bug, not the user's."""
    return type(exc).__module__.startswith("onnxruntime") or isinstance(exc, ValueError)

_FLOAT8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ, onnx.TensorProto.FLOAT8E5M2,
           onnx.TensorProto.FLOAT8E5M2FNUZ}


def has_float8(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds float8 Q/DQ (a float8 initializer, Constant or QuantizeLinear ``output_dtype``)."""
    g = model.graph
    return any(i.data_type in _FLOAT8 for i in g.initializer) or any(
        a.t.data_type in _FLOAT8 or (a.name == "output_dtype" and a.i in _FLOAT8)
        for n in g.node if n.op_type in ("Constant", "QuantizeLinear") for a in n.attribute)


def optimization_level(model: onnx.ModelProto, optimize: bool = True) -> str:
    """The ``onnxruntime.GraphOptimizationLevel`` name a session of ``model`` runs with: ``ORT_ENABLE_ALL``, or
    ``ORT_DISABLE_ALL`` when not ``optimize``; a float8 model at most ``ORT_ENABLE_BASIC``.

    ONNX Runtime 1.32's extended-level Q/DQ rewrites take every QuantizeLinear for an integer one:
    ``ReluQuantRewrite`` drops a Relu in front of a Q whose zero point is its type's lowest value (float8 keeps
    negative values: an FP8 digits CNN fell from 99.4 % to 25.6 % accuracy), and ``ClipQuantRewrite`` fails the
    session ("Unexpected data type for QuantizeLinear input y_zero_point of 17") on a Clip (ReLU6) before a float8 Q.
    The basic level (constant folding, redundant node elimination) computes what the graph says; the CPU provider
    has no float8 kernels, so the extended level's Q/DQ fusions would not apply to a float8 model anyway.
    """
    if not optimize:
        return "ORT_DISABLE_ALL"
    return "ORT_ENABLE_BASIC" if has_float8(model) else "ORT_ENABLE_ALL"


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs the named intermediate tensors (types from inference)."""
    names = list(dict.fromkeys(names))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    infos = tensor_infos(out)
    produced = {o for n in out.graph.node for o in n.output} | {i.name for i in out.graph.input}
    for name in names:
        if name in existing:
            continue
        if name not in produced:
            raise ModelError(f"tensor '{name}' is not produced by any node of the model",
                             hint="use names from the layer table's outputs column")
        info = infos.get(name)
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype)) if info and info.dtype != "unknown" else 0
        vi = onnx.helper.make_tensor_value_info(name, elem, None)
        out.graph.output.append(vi)
    return out


def check_feeds(model: onnx.ModelProto, feeds: Feeds, *, where: str = "the inputs") -> dict[str, np.ndarray]:
    """Validate feeds against the model's inputs: names, dtypes, ranks and fixed dims; finite values."""
    inits = {i.name for i in model.graph.initializer}
    expected = {i.name: i for i in model.graph.input if i.name not in inits}
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if missing or extra:
        raise DataError(
            f"{where} do not match the model's inputs: missing {missing}, unexpected {extra}",
            hint=f"provide one array per model input, keyed by name: {list(expected)}",
        )
    infos = tensor_infos(model)
    out: dict[str, np.ndarray] = {}
    for name in expected:
        arr = np.asarray(feeds[name])
        info = infos[name]
        if info.dtype != "unknown" and arr.dtype != np.dtype(info.dtype):
            raise DataError(f"input '{name}' in {where} has dtype {arr.dtype}, the model expects {info.dtype}",
                            hint=f"convert it, e.g. arr.astype(np.{info.dtype})")
        if info.shape is not None:
            if arr.ndim != len(info.shape) or any(
                isinstance(d, int) and d > 0 and d != s for d, s in zip(info.shape, arr.shape)
            ):
                raise DataError(f"input '{name}' in {where} has shape {list(arr.shape)}, the model expects "
                                f"{list(info.shape)}", hint="reshape or resize the data to the model's input shape")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise DataError(f"input '{name}' in {where} contains NaN or Inf",
                            hint="clean the data (np.nan_to_num) or drop those samples")
        out[name] = arr
    return out


class OrtEngine:
    """An ONNX Runtime CPU inference session."""

    def __init__(
        self, model: onnx.ModelProto, *, optimize: bool = True, threads: int | None = None, low_memory: bool = False,
        path: str | os.PathLike[str] | None = None, trace: str | os.PathLike[str] | None = None,
    ) -> None:
        """``low_memory`` turns off ONNX Runtime's CPU memory arena and memory patterns, so memory is released
        after every run (streamed calibration with many intermediate outputs keeps a bounded footprint).

        ``path``: the file ``model`` is, unchanged; ONNX Runtime reads it instead of ``model`` serialised again (a
        194 MB tree ensemble is 1.15 GB as a protobuf: no second serialisation of it). ``trace``: a folder where the
        session records ONNX Runtime's per-node profile (``ort_*.json``): what
        :func:`~workbench.backends.ort_profile.profile_session` reads."""
        import onnxruntime as ort

        self.model, self.path, self.trace = model, path, Path(trace) if trace is not None else None
        self.optimize, self.threads = optimize, threads
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization_level(model, optimize))
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        if low_memory:
            opts.enable_cpu_mem_arena = False
            opts.enable_mem_pattern = False
        if self.trace is not None:
            opts.enable_profiling = True
            opts.profile_file_prefix = str(self.trace / "ort")
        try:
            self.session = ort.InferenceSession(str(path) if path is not None else model_bytes(model), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            if not is_ort_error(exc):
                raise
            raise ModelError(f"ONNX Runtime cannot load the model: {str(exc).strip().splitlines()[0]}",
                             hint="check the node named in the message; `workbench inspect` shows the graph") from exc
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Feeds, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model on ``feeds``; ``outputs`` (any tensor the model keeps) default to the graph outputs."""
        names = list(outputs) if outputs is not None else self.output_names
        try:
            values = self.session.run(names, dict(feeds))
        except Exception as exc:
            if not is_ort_error(exc):
                raise
            raise DataError(f"ONNX Runtime failed to run the model: {str(exc).strip().splitlines()[0]}",
                            hint="check input names, shapes and dtypes against `workbench inspect`") from exc
        return dict(zip(names, values))

    def profile(self, feeds: Feeds, *, iterations: int = 20) -> Table:
        """Per-node timing of ``iterations`` runs (see :func:`~workbench.backends.ort_profile.profile_session`)."""
        from .ort_profile import profile_session  # per-node timing lives beside the profile importers

        return profile_session(self, feeds, iterations=iterations)

    def close(self) -> None:
        """Release the ONNX Runtime session."""
        self.session = None


class OrtBackend:
    """ONNX Runtime on the CPU: always available."""

    name = "onnxruntime"

    def available(self) -> str | None:
        """None: ONNX Runtime is always installed."""
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:  # pragma: no cover - a core dependency
            return f"onnxruntime is not installed ({exc})"
        return None

    def build(self, model: onnx.ModelProto, settings: Any = None, *, capture: tuple[str, ...] = ()) -> OrtEngine:
        """An :class:`OrtEngine` (``settings``: whether to optimise the graph); ``capture`` adds those tensors as outputs."""
        optimize = True if settings is None else bool(getattr(settings, "optimize", settings))
        return OrtEngine(with_outputs(model, capture) if capture else model, optimize=optimize)
