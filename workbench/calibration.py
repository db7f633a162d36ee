"""Calibration: feed representative data through the FP32 model in ONNX Runtime and pick each tensor's amax.

Data: anything :func:`workbench.data.load_data` reads (an ``.npz``, a folder of images or audio with its
recorded preprocessing, a dict of arrays, a :class:`~workbench.data.Dataset`), each input batched along its own
sample axis (a scalar sample rate or a shared state is fed as is); :func:`workbench.data.random_data` comes
with a loud warning: random data gives scales that fit no real input.

Statistics are streamed in bounded memory, one batch at a time, with the needed tensors as extra ONNX
Runtime outputs: a running min/max and a histogram of ``|x|`` per tensor whose range doubles (merging
bin pairs, an exact re-binning) when a batch exceeds it. No activation is kept after its batch.

Methods, all computed from the same histogram so each tensor shows what every method would choose:
``max`` (the absolute maximum), ``percentile`` (the ``|x|`` below which ``percentile`` % of values fall),
``entropy`` (TensorRT's entropy calibrator: the threshold minimising the KL divergence between the
clipped reference distribution and its 128-level quantized version) and ``mse`` (the threshold minimising
the expected squared quantize-dequantize error) and ``auto``, the default: entropy's threshold unless it clips
more than ``AUTO_CLIP`` (0.1 %) of the tensor's values, then mse's, which weighs what clipping costs against
rounding (entropy's divergence ignores how far the clipped values lie: it cuts heavy tails that carry signal:
PP-PicoDet's HardSwish outputs were clipped at a threshold 12 % of values exceeded; numbers in
docs/int8_accuracy.md).
Each tensor also records the share of its values each threshold clips (``TensorStats.clipped``). Results go into a :class:`~workbench.precision.ScaleCache`
(JSON, keyed by model digest + data digest + method). Use 100-500 representative samples; fewer is warned.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .backends.ort import OrtEngine, check_feeds, with_outputs
from .cancel import Cancel, Progress, cancelled, report
from .choices import DEFAULT_METHOD, METHODS
from .cluster import Cluster
from .data import Axes, Dataset, Preprocessing, load_data
from .errors import CalibrationError, DataError
from .fsio import read_json, write_json
from .graph import infer_shapes, model_bytes, sha256_bytes, tensor_infos
from .precision import (
    QDQ_FLOATS,
    WEIGHTED_OPS,
    ScaleCache,
    TensorStats,
    activation_tensors,
    check_dtype,
    float_tensors,
)

__all__ = [
    "METHODS",
    "DEFAULT_METHOD",
    "AUTO_CLIP",
    "MIN_SAMPLES",
    "clipped_shares",
    "calibration_diagnostics",
    "Diagnostics",
    "Clipping",
    "OutOfRange",
    "BatchPart",
    "batch_part",
    "activation_ranges",
    "ScaleCache",
    "TensorStats",
    "calibrate",
    "compute_thresholds",
    "fp8_round",
    "RunningHistogram",
]

log = logging.getLogger(__name__)

AUTO_CLIP = 0.001  # ``auto``: the largest share of values entropy's threshold may clip before mse's is used
MIN_SAMPLES = 100
FP8_MAX = 448.0  # the largest finite float8 e4m3fn value: fp8 scales are amax / 448
_SUMMARY_BINS = 128
_CHUNK = 1 << 20


class RunningHistogram:
    """Histogram of ``|x|`` over ``[0, hist_max]`` with ``num_bins`` bins, min/max, grown by doubling."""

    def __init__(self, num_bins: int = 2048) -> None:
        if num_bins < 256 or num_bins % 2:
            raise CalibrationError(f"num_bins={num_bins} is too small or odd", hint="use an even number >= 256")
        self.num_bins = num_bins
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.hist_max = 0.0
        self.min = np.inf
        self.max = -np.inf
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        """Add a batch's values (any shape)."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        amax = max(abs(lo), abs(hi))
        self.count += x.size
        if amax == 0.0:
            self.counts[0] += x.size
            return
        if self.hist_max == 0.0:
            self.hist_max = amax
        while amax > self.hist_max:
            self._double()
        self.counts += _bins(x, self.num_bins, self.hist_max, self.num_bins - 1)

    def _double(self) -> None:
        """Double the range: merge bin pairs into the lower half (an exact re-binning)."""
        merged = self.counts.reshape(-1, 2).sum(axis=1)
        self.counts[:] = 0
        self.counts[: merged.size] = merged
        self.hist_max *= 2.0

    def merge(self, part: BatchPart) -> None:
        """Add one batch's :class:`BatchPart` (merged in batch order: the same bits as :meth:`update` on the batch's
        values). The part's grid is this histogram's range times a power of two (both grow by doubling from the
        first non-zero batch's amax), so its bins map onto these exactly: bin ``j`` at ``base`` is bin
        ``j >> d`` at ``base * 2**d``, as ``floor(y / 2**d) == floor(y) >> d``."""
        if part.values is not None:
            self.update(part.values)
            return
        if part.count == 0:
            return
        self.min, self.max = min(self.min, part.min), max(self.max, part.max)
        self.count += part.count
        if part.counts is None:  # all zeros
            self.counts[0] += part.count
            return
        shift = 0
        if self.hist_max == 0.0:  # the first non-zero batch sets the grid: its own amax
            self.hist_max = part.base
        elif part.base >= self.hist_max:
            while self.hist_max < part.base:
                self._double()
        else:
            grid = part.base
            while grid < self.hist_max:
                grid *= 2.0
                shift += 1
        if part.base * 2.0**shift != self.hist_max:  # our bug: a part binned on another grid
            raise RuntimeError(f"batch histogram range {part.base} is not on this histogram's grid {self.hist_max}")
        np.add.at(self.counts, np.minimum(np.arange(part.counts.size) >> shift, self.num_bins - 1), part.counts)

    @property
    def amax(self) -> float:
        """The largest magnitude seen (0 before any value)."""
        return 0.0 if self.count == 0 else float(max(abs(self.min), abs(self.max)))


def _bins(x: np.ndarray, num_bins: int, hist_max: float, last: int) -> np.ndarray:
    """Counts of ``|x|`` (float32, flat) over ``[0, hist_max]`` in ``num_bins`` bins, indices above ``last`` in
    ``last``; in chunks, so temporaries stay bounded whatever the tensor size."""
    counts = np.zeros(last + 1, dtype=np.int64)
    factor = np.float32(num_bins / hist_max)
    for s in range(0, x.size, _CHUNK):
        idx = np.abs(x[s : s + _CHUNK])
        idx *= factor
        i = idx.astype(np.int32)
        np.minimum(i, last, out=i)
        counts += np.bincount(i, minlength=last + 1)
    return counts


@dataclass(frozen=True)
class BatchPart:
    """What one batch adds to one tensor's :class:`RunningHistogram`, computed where the batch ran (a Dask worker),
    merged with :meth:`RunningHistogram.merge`: ``counts`` are the unclamped bins (``num_bins + 1``) of ``|x|`` at
    range ``base``; none when the batch is all zeros; ``values`` (the batch's values) instead where no grid was
    known when the batch was sent (a tensor all zero on the first batch)."""

    count: int
    min: float = np.inf
    max: float = -np.inf
    base: float = 0.0
    counts: np.ndarray | None = None
    values: np.ndarray | None = None


def batch_part(x: np.ndarray, num_bins: int, base: float | None, *, own_grid: bool = False) -> BatchPart:
    """One batch's :class:`BatchPart`: binned at ``base`` doubled until it holds the batch (as
    :meth:`RunningHistogram.update` grows its range); with no ``base``, at the batch's own amax (``own_grid``: the
    first batch, which sets the grid) or as the values themselves."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return BatchPart(0)
    lo, hi = float(x.min()), float(x.max())
    amax = max(abs(lo), abs(hi))
    if amax == 0.0:
        return BatchPart(x.size, lo, hi)
    if base is None:
        if not own_grid:
            return BatchPart(x.size, lo, hi, values=x)
        base = amax
    while amax > base:
        base *= 2.0
    return BatchPart(x.size, lo, hi, base, _bins(x, num_bins, base, num_bins))


def _percentile(counts: np.ndarray, width: float, pct: float, amax: float) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    cdf = np.cumsum(counts) / total
    i = int(np.searchsorted(cdf, pct / 100.0))
    return float(min((i + 1) * width, amax))


def _entropy(counts: np.ndarray, width: float, amax: float, *, levels: int = 128, stride: int = 1) -> float:
    """TensorRT's entropy calibration (KL divergence between the clipped histogram and its 128-level version)."""
    counts = counts.astype(np.float64)
    if counts.size > 1:
        # as NVIDIA's pytorch-quantization does: flatten the spike at 0 (ReLU outputs) so it does not
        # dominate the divergence and drag the threshold down
        counts[0] = counts[1]
    last = int(np.nonzero(counts)[0][-1]) + 1 if counts.any() else 0
    if last <= levels:
        return float(min(last * width, amax)) if last else 0.0
    nbins = last
    counts = counts[:nbins]
    best_i, best_kl = nbins, np.inf
    for i in range(levels, nbins + 1, stride):
        p = counts[:i].copy()
        p[i - 1] += counts[i:].sum()  # outliers clipped into the last bin
        nz = counts[:i] != 0
        # quantize the first i bins into `levels` groups, spread each group's mass over its non-empty bins
        edges = (np.arange(levels + 1) * i) // levels
        group_sum = np.add.reduceat(counts[:i], edges[:-1])
        group_nz = np.add.reduceat(nz.astype(np.float64), edges[:-1])
        per_bin = np.divide(group_sum, group_nz, out=np.zeros_like(group_sum), where=group_nz > 0)
        q = np.repeat(per_bin, np.diff(edges)) * nz
        ps, qs = p.sum(), q.sum()
        if qs == 0:
            continue
        p /= ps
        q /= qs
        mask = p > 0
        qm = q[mask]
        if (qm == 0).any():
            kl = np.inf
        else:
            kl = float(np.sum(p[mask] * np.log(p[mask] / qm)))
        if kl <= best_kl:  # the last minimum, as pytorch-quantization picks
            best_kl, best_i = kl, i
    return float(min(best_i * width, amax))


def fp8_round(x: np.ndarray) -> np.ndarray:
    """Non-negative values rounded to the nearest float8 e4m3fn value (ties to even, as QuantizeLinear-19 rounds),
    saturating at 448: 3 mantissa bits per binade from 2^-6, subnormal steps of 2^-9 below."""
    x = np.minimum(np.asarray(x, dtype=np.float64), FP8_MAX)
    step = 2.0 ** (np.maximum(np.floor(np.log2(np.maximum(x, 2.0 ** -9))), -6.0) - 3.0)
    return np.minimum(np.rint(x / step) * step, FP8_MAX)


def _mse(counts: np.ndarray, width: float, amax: float, *, dtype: str = "int8", candidates: int = 256) -> float:
    """The threshold minimising the expected squared error of symmetric quantize-dequantize on ``dtype``'s grid
    (int8: 127 even steps; fp8: the e4m3fn values up to 448, :func:`fp8_round`)."""
    if counts.sum() == 0:
        return 0.0
    last = int(np.nonzero(counts)[0][-1]) + 1
    centers = (np.arange(last) + 0.5) * width
    c = counts[:last].astype(np.float64)
    best_t, best_err = last * width, np.inf
    qmax = FP8_MAX if dtype == "fp8" else 127.0
    for t in np.linspace(last * width / candidates, last * width, candidates):
        s = t / qmax
        q = (fp8_round(centers / s) if dtype == "fp8" else np.clip(np.rint(centers / s), 0, qmax)) * s
        err = float(np.dot(c, (centers - q) ** 2))
        if err < best_err:
            best_err, best_t = err, t
    return float(min(best_t, amax))


def _clipped(counts: np.ndarray, width: float, threshold: float) -> float:
    """Share of the histogram's values above ``threshold`` (bins wholly above it)."""
    total = counts.sum()
    if total == 0 or width <= 0:
        return 0.0
    first = int(np.ceil(threshold / width - 1e-9))
    return float(counts[first:].sum() / total) if first < counts.size else 0.0


def compute_thresholds(hist: RunningHistogram, *, percentile: float = 99.99, dtype: str = "int8") -> dict[str, float]:
    """The amax each method chooses from one tensor's histogram (``mse`` on ``dtype``'s grid). ``auto`` for fp8 is
    ``max``, as in TensorRT's FP8 recipe and ModelOpt's PyTorch FP8 default: FP8 keeps 3 mantissa bits at every
    magnitude, so clipping buys it little, and on four corpus detectors/segmenters max gave the best or equal task
    metric where entropy (an INT8 notion: 128 levels) gave the worst (docs/fp8.md)."""
    amax = hist.amax
    if amax == 0.0 or hist.hist_max == 0.0:
        return dict.fromkeys(METHODS, 0.0)
    width = hist.hist_max / hist.num_bins
    stride = max(1, hist.num_bins // 1024)
    entropy = _entropy(hist.counts, width, amax, stride=stride)
    mse = _mse(hist.counts, width, amax, dtype=dtype)
    return {
        "max": amax,
        "percentile": _percentile(hist.counts, width, percentile, amax),
        "entropy": entropy,
        "mse": mse,
        "auto": amax if dtype == "fp8" else entropy if _clipped(hist.counts, width, entropy) <= AUTO_CLIP else mse,
    }


def clipped_shares(hist: RunningHistogram, thresholds: Mapping[str, float]) -> dict[str, float]:
    """{method: share of the tensor's values its threshold clips}."""
    width = hist.hist_max / hist.num_bins if hist.hist_max else 0.0
    return {m: round(_clipped(hist.counts, width, t), 8) for m, t in thresholds.items()}


# --- calibration -------------------------------------------------------------------------------------


def _digest_batch(h: Any, feeds: Mapping[str, np.ndarray]) -> None:
    for k in sorted(feeds):
        a = np.ascontiguousarray(feeds[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())


@dataclass
class _CalibrationBatch:
    """One batch's histogram parts (:func:`batch_part`) for every calibrated tensor: run here or as a Dask task
    (:func:`_collect_on`). The engine is made on first use in each process and never pickled."""

    model: onnx.ModelProto  # the FP32 model with the calibrated tensors as extra outputs
    names: list[str]
    inner: list[str]
    num_bins: int
    description: str
    threads: int | None = None
    _engine: Any = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_engine": None}

    def engine(self) -> OrtEngine:
        if self._engine is None:
            self._engine = OrtEngine(self.model, low_memory=True, optimize=False, threads=self.threads)
        return self._engine

    def values(self, i: int, feeds: Mapping[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
        """Each calibrated tensor's values on batch ``i``; NaN or Inf is refused, naming the tensor and batch."""
        outs = self.engine().run(dict(feeds), self.inner)
        for t in self.names:
            value = feeds[t] if t in feeds else outs[t]
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise CalibrationError(f"tensor '{t}' holds NaN or Inf on batch {i} of {self.description}",
                                       hint="check the data's preprocessing (scale, mean/std) or exclude the "
                                            "node that reads this tensor")
            yield t, value

    def parts(self, item: tuple[int, dict[str, np.ndarray]], bases: Mapping[str, float] | None) -> dict[str, BatchPart]:
        """``bases`` None: the first batch (each tensor binned at its own amax, which sets the grid)."""
        i, feeds = item
        return {t: batch_part(v, self.num_bins, None if bases is None else bases.get(t), own_grid=bases is None)
                for t, v in self.values(i, feeds)}


def _first_parts(task: _CalibrationBatch, item: tuple[int, dict[str, np.ndarray]]) -> dict[str, BatchPart]:
    return task.parts(item, None)


@dataclass(frozen=True)
class _Grids:
    """Each tensor's histogram range after the first batch (shared with the workers as one object: Dask scatters
    a bare dict item by item)."""

    bases: dict[str, float]


def _later_parts(task: _CalibrationBatch, grids: _Grids, item: tuple[int, dict[str, np.ndarray]]
                 ) -> dict[str, BatchPart]:
    return task.parts(item, grids.bases)


def _cancelled_error(samples: int) -> CalibrationError:
    return CalibrationError(f"calibration cancelled after {samples} samples", hint="run it again; nothing was written")


def _collect_here(task: _CalibrationBatch, items: Iterator[tuple[int, dict[str, np.ndarray]]],
                  hists: Mapping[str, RunningHistogram], sizes: list[int], total: int, progress: Progress | None,
                  cancel: Cancel) -> int:
    """Stream the batches through one local engine into ``hists``; the samples seen."""
    samples = 0
    try:
        while True:
            if cancelled(cancel):
                raise _cancelled_error(samples)
            item = next(items, None)
            if item is None:
                return samples
            for t, value in task.values(*item):
                hists[t].update(value)
            samples += sizes[item[0]]
            report(progress, samples, total, "calibrating")
    finally:
        if task._engine is not None:
            task._engine.close()


def _collect_on(cluster: Cluster, task: _CalibrationBatch, items: Iterator[tuple[int, dict[str, np.ndarray]]],
                hists: Mapping[str, RunningHistogram], sizes: list[int], total: int, progress: Progress | None,
                cancel: Cancel) -> int:
    """The batches as Dask tasks, their parts merged in batch order (:meth:`RunningHistogram.merge`). The first
    batch runs alone: its amax per tensor sets the grid every later batch is binned on, as in :func:`_collect_here`.
    The model goes to the workers once."""
    import dataclasses

    shared = cluster.share(dataclasses.replace(task, threads=cluster.task_threads()))
    samples = 0

    def merge(parts: Mapping[str, BatchPart], i: int) -> None:
        nonlocal samples
        for t, part in parts.items():
            hists[t].merge(part)
        samples += sizes[i]
        report(progress, samples, total, "calibrating")

    if cancelled(cancel):
        raise _cancelled_error(samples)
    first = next(items, None)
    if first is None:
        return 0
    for parts in cluster.ordered_map(_first_parts, [first], shared=[shared]):
        merge(parts, 0)
    bases = {t: h.hist_max for t, h in hists.items() if h.hist_max > 0.0}
    results = cluster.ordered_map(_later_parts, items, shared=[shared, cluster.share(_Grids(bases))])
    try:
        for i, parts in enumerate(results, start=1):
            if cancelled(cancel):
                raise _cancelled_error(samples)
            merge(parts, i)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # cancels the tasks still pending
    return samples


def _nothing_to_calibrate(model: onnx.ModelProto, exclude: Sequence[str]) -> CalibrationError:
    """Why no tensor gets Q/DQ: no weighted op, a weighted op reading a type Q/DQ cannot take (named), or all
    excluded."""
    weighted = [n for n in model.graph.node if n.op_type in WEIGHTED_OPS]
    if not weighted:
        return CalibrationError("the model has no tensor to calibrate: its main graph has no Conv/ConvTranspose/"
                                "Gemm/MatMul, the ops INT8 quantizes", hint="nothing to quantize; use "
                                "convert_precision for fp16 instead")
    infos = tensor_infos(infer_shapes(model, where="the model"))
    for n in weighted:
        for t in n.input[:2]:
            dtype = infos[t].dtype if t in infos else "unknown"
            if t and dtype not in QDQ_FLOATS:
                return CalibrationError(
                    f"the model has no tensor to calibrate: node '{n.name}' ({n.op_type}) reads tensor '{t}' of type "
                    f"{dtype}, and Q/DQ quantize {' or '.join(QDQ_FLOATS)} tensors",
                    hint="export the model with float32 (or float16) weights and activations, or quantize only "
                         "the float ones (nodes=...)")
    return CalibrationError(f"the model has no tensor to calibrate: every Conv/ConvTranspose/Gemm/MatMul is "
                            f"excluded (exclude={list(exclude)})", hint="exclude fewer nodes")


def calibrate(
    model: onnx.ModelProto,
    data: Any,
    *,
    method: str = DEFAULT_METHOD,
    percentile: float = 99.99,
    num_bins: int = 2048,
    tensors: Sequence[str] | None = None,
    progress: Progress | None = None,
    cancel: Cancel = None,
    batch_size: int = 16,
    exclude: Sequence[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    dtype: str = "int8",
    sample_axes: Axes | None = None,
    preprocessing: Preprocessing | None = None,
    cluster: Cluster | None = None,
    run_length: int | None = None,
) -> ScaleCache:
    """Collect activation statistics of the FP32 ``model`` on ``data`` and choose each tensor's amax.

    ``data``: anything :func:`~workbench.data.load_data` reads; ``sample_axes`` / ``preprocessing`` /
    ``run_length`` as there (with a run length each batch is exactly one run of the data).

    ``tensors``: which tensors (default: the activations :func:`~workbench.precision.quantize_model` needs,
    minus those only read by ``exclude``). ``progress(samples_done, samples_total, "calibrating")``;
    ``cancel`` is checked between batches (raises :class:`CalibrationError`).
    With ``cache_dir``, a cache with the same model, data and settings is reused, and the result is saved.
    ``cluster`` (:func:`workbench.cluster.connect`): the batches run as Dask tasks there, each returning its
    histogram parts (:func:`batch_part`), merged here in batch order: the same scales, bit for bit.
    """
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method '{method}'", hint=f"use one of {list(METHODS)}")
    if not 0.0 < percentile <= 100.0:
        raise CalibrationError(f"percentile {percentile} is outside (0, 100]", hint="typical values: 99.9 to 99.999")
    check_dtype(model, dtype)
    start = time.perf_counter()
    names = list(tensors) if tensors is not None else activation_tensors(model, exclude=exclude)
    if not names:
        raise _nothing_to_calibrate(model, exclude)
    # every node output is a tensor, typed or not (a model without value_info, U^2-Net's, has no infos)
    known = set(tensor_infos(model)) | {i.name for i in model.graph.input} | {
        o for n in model.graph.node for o in n.output if o}
    unknown = [t for t in names if t not in known]
    if unknown:
        raise CalibrationError(f"tensor(s) {unknown} are not in the model", hint="use names from the layer table")
    model_digest = sha256_bytes(model_bytes(model))
    settings: dict[str, Any] = {"percentile": percentile, "num_bins": num_bins, "tensors": sorted(names),
                                "dtype": dtype}
    ds = load_data(data, model, sample_axes=sample_axes, preprocessing=preprocessing, run_length=run_length)
    description = ds.description
    if any(ds.sample_axes[k] != 0 for k in ds.inputs):  # only when not samples-first: older caches keep their key
        settings["sample_axes"] = {k: ds.sample_axes[k] for k in ds.inputs}
    if ds.preprocessing is not None:
        settings["preprocessing"] = ds.preprocessing.to_dict()
    if ds.given_run_length:  # only when given: older caches (and fixed-batch models') keep their key
        settings["run_length"] = ds.given_run_length
    step = ds.run_length or batch_size
    total = (ds.samples // step) * step if ds.run_length else ds.samples

    index_path = Path(cache_dir) / "scales" / "index.json" if cache_dir is not None else None
    data_digest_known = None
    if isinstance(data, (str, os.PathLike)) and Path(data).is_file():
        data_digest_known = "file:" + hashlib.sha256(Path(data).read_bytes()).hexdigest()
    if index_path is not None and data_digest_known and index_path.is_file():
        probe = ScaleCache({}, method, model_digest, data_digest_known, settings=settings)
        hit = dict(read_json(index_path)).get(probe.key)
        if hit and (index_path.parent / f"{hit}.json").is_file():
            log.info("reusing scale cache %s", hit)
            return ScaleCache.load(index_path.parent / f"{hit}.json")

    graph_inputs = [i.name for i in model.graph.input]
    inner = [t for t in names if t not in graph_inputs]
    # no graph optimizations: a fusion (Conv+BatchNorm) applies only where the tensor between is not captured,
    # so with them the captured values (rounding-level) and hence the quantized model would depend on which
    # tensors are calibrated; ONNX Runtime's own calibrators run unoptimized too
    infos = tensor_infos(model)
    run_model = model if all(t in infos for t in inner) else infer_shapes(model, where="the model")  # typed outputs
    task = _CalibrationBatch(with_outputs(run_model, inner), names, inner, num_bins, description)
    hists = {t: RunningHistogram(num_bins) for t in names}
    h = hashlib.sha256()
    sizes: list[int] = []

    def batches() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for i, batch in enumerate(ds.batches(batch_size)):
            feeds = check_feeds(model, batch.feeds, where=f"batch {i} of {description}")
            _digest_batch(h, feeds)
            sizes.append(batch.samples)
            yield i, feeds

    if cluster is None:
        samples = _collect_here(task, batches(), hists, sizes, total, progress, cancel)
    else:
        samples = _collect_on(cluster, task, batches(), hists, sizes, total, progress, cancel)
    if samples == 0:
        raise DataError(f"{description} holds no samples", hint="provide 100-500 representative samples")

    notes: list[str] = []
    if samples < MIN_SAMPLES:
        notes.append(f"only {samples} calibration samples; 100-500 representative samples are recommended")
    stats: dict[str, TensorStats] = {}
    for t, hist in hists.items():
        th = compute_thresholds(hist, percentile=percentile, dtype=dtype)
        if hist.amax == 0.0:
            notes.append(f"tensor '{t}' was all zeros on the calibration data: its scale would be 0")
        summary = hist.counts.reshape(_SUMMARY_BINS, -1).sum(axis=1) if hist.num_bins % _SUMMARY_BINS == 0 \
            else hist.counts
        stats[t] = TensorStats(amax=th[method], min=float(hist.min), max=float(hist.max), thresholds=th,
                               hist=[int(c) for c in summary], hist_max=float(hist.hist_max),
                               clipped=clipped_shares(hist, th))
    for n in notes:
        warnings.warn(n, UserWarning, stacklevel=2)
        log.warning(n)
    data_digest = data_digest_known or "data:" + h.hexdigest()
    cache = ScaleCache(stats, method, model_digest, data_digest, samples, settings, notes,
                       time.perf_counter() - start)
    if cache_dir is not None:
        digest = cache.save(cache_dir)
        index = dict(read_json(index_path)) if index_path is not None and index_path.is_file() else {}
        index[cache.key] = digest
        write_json(index_path, index)  # type: ignore[arg-type]
    return cache


# --- diagnostics ---------------------------------------------------------------------------------------


def _chosen_clip(s: TensorStats) -> float:
    """Share of the calibration values above the tensor's chosen amax (the method's exact share when recorded,
    else from the 128-bin summary: bins wholly above the amax)."""
    value = s.value
    for m, t in s.thresholds.items():
        if s.override is None and t == value and m in s.clipped:
            return float(s.clipped[m])
    counts = np.asarray(s.hist, dtype=np.float64)
    return _clipped(counts, s.hist_max / counts.size if counts.size else 0.0, value)


@dataclass(frozen=True)
class Clipping:
    """A tensor's share of calibration values above its chosen amax (``method``'s, or ``override``)."""

    tensor: str
    method: str
    amax: float
    max: float
    clipped: float


@dataclass(frozen=True)
class OutOfRange:
    """A tensor whose values on the evaluation data leave its calibrated [min, max] (``beyond``: the share of
    evaluation values outside it)."""

    tensor: str
    calibrated: tuple[float, float]
    eval: tuple[float, float]
    beyond: float


@dataclass(frozen=True)
class Diagnostics:
    """What a calibration rests on (issue 13, part 5); :meth:`to_dict` gives the CLI's JSON keys."""

    samples: int
    method: str
    clipped: tuple[Clipping, ...]
    clipped_tensors: int
    memory_mb: float
    warnings: tuple[str, ...]
    out_of_range: tuple[OutOfRange, ...] = ()
    eval_samples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON types (``eval_samples`` only with evaluation data)."""
        out: dict[str, Any] = {
            "samples": self.samples, "method": self.method,
            "clipped": [{"tensor": c.tensor, "method": c.method, "amax": c.amax, "max": c.max, "clipped": c.clipped}
                        for c in self.clipped],
            "clipped_tensors": self.clipped_tensors, "memory_mb": self.memory_mb, "warnings": list(self.warnings),
            "out_of_range": [{"tensor": r.tensor, "calibrated": list(r.calibrated), "eval": list(r.eval),
                              "beyond": r.beyond} for r in self.out_of_range]}
        if self.eval_samples is not None:
            out["eval_samples"] = self.eval_samples
        return out


def calibration_diagnostics(cache: ScaleCache, model: onnx.ModelProto | None = None, eval_data: Any = None, *,
                            batch_size: int = 16, top: int = 10, sample_axes: Axes | None = None,
                            preprocessing: Preprocessing | None = None) -> Diagnostics:
    """What a calibration rests on (issue 13, part 5).

    ``samples`` used; ``clipped``: the ``top`` tensors by share of calibration values above their chosen amax
    and ``clipped_tensors`` (how many clip any); ``memory_mb``: an estimate of calibration's peak working memory
    (one batch of the captured activations, float32, plus the histograms; elements per sample are measured, so
    dynamic shapes count as seen); with ``model`` and ``eval_data``: ``out_of_range``, the tensors whose values on
    that data fall outside the calibrated [min, max] (and the share of values beyond it), with a warning.
    """
    n = max(cache.samples, 1)
    rows = []
    per_sample = 0.0
    for t, s in cache.tensors.items():
        per_sample += sum(s.hist) / n
        share = _chosen_clip(s)
        method = next((m for m, v in s.thresholds.items() if v == s.value and s.override is None), "override")
        rows.append(Clipping(t, method, s.value, max(abs(s.min), abs(s.max)), round(share, 8)))
    rows.sort(key=lambda r: -r.clipped)
    bins = int(cache.settings.get("num_bins", 2048))
    memory = (per_sample * batch_size * 4 + len(cache.tensors) * bins * 8) / 2**20
    notes = list(cache.warnings)
    if cache.samples < MIN_SAMPLES:
        notes = [w for w in notes if "calibration samples" not in w] + [
            f"only {cache.samples} calibration samples; 100-500 representative samples are recommended"]
    beyond: list[OutOfRange] = []
    eval_samples = None
    if model is not None and eval_data is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seen = calibrate(model, eval_data, method="max", tensors=list(cache.tensors), batch_size=batch_size,
                             sample_axes=sample_axes, preprocessing=preprocessing)
        for t, e in seen.tensors.items():
            c = cache.tensors[t]
            if e.min < c.min or e.max > c.max:
                counts = np.asarray(e.hist, dtype=np.float64)
                share = _clipped(counts, e.hist_max / counts.size if counts.size else 0.0,
                                 max(abs(c.min), abs(c.max)))
                beyond.append(OutOfRange(t, (c.min, c.max), (e.min, e.max), round(share, 8)))
        beyond.sort(key=lambda r: -r.beyond)
        eval_samples = seen.samples
        if beyond:
            worst = beyond[0]
            notes.append(
                f"on the evaluation data {len(beyond)} of {len(seen.tensors)} tensors leave the calibrated range "
                f"(worst: '{worst.tensor}', eval [{worst.eval[0]:.4g}, {worst.eval[1]:.4g}] vs calibrated "
                f"[{worst.calibrated[0]:.4g}, {worst.calibrated[1]:.4g}]): calibrate on data like it")
    return Diagnostics(cache.samples, cache.method, tuple(rows[:top]), sum(1 for r in rows if r.clipped > 0),
                       round(memory, 3), tuple(notes), tuple(beyond[:top]), eval_samples)


# --- activation ranges (fp16 conversion) -----------------------------------------------------------------


def activation_ranges(model: onnx.ModelProto, data: Dataset) -> dict[str, float]:
    """{tensor: largest magnitude} of every float tensor (:func:`~workbench.precision.float_tensors`) over ``data``
    (a Dataset) in ONNX Runtime, unoptimised. A tensor holding inf or NaN on the reference run (T5's
    ``Log`` of a zero relative position) gets inf: its nodes stay float32. One sample per run where the model allows:
    every float tensor is an extra output, so a batch costs the whole network's activations."""
    names = float_tensors(model)
    graph_inputs = {i.name for i in model.graph.input}
    inner = [t for t in names if t not in graph_inputs]
    amax: dict[str, float] = {}
    engine = OrtEngine(with_outputs(model, inner), low_memory=True, optimize=False)
    try:
        for i, batch in enumerate(data.batches(1)):
            feeds = check_feeds(model, batch.feeds, where=f"batch {i} of {data.description}")
            outs = engine.run(feeds, inner)
            for t in names:
                value = feeds[t] if t in feeds else outs.get(t)
                if value is None or value.size == 0 or value.dtype.kind != "f":
                    continue
                m = float(np.max(np.abs(value)))  # NaN when the tensor holds one
                amax[t] = max(amax.get(t, 0.0), float("inf") if np.isnan(m) else m)
            del outs
    finally:
        engine.close()
    if not amax:
        raise DataError(f"{data.description} holds no samples", hint="give a few representative samples")
    return amax
