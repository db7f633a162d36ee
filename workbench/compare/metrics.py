"""Error metrics: pass/fail tolerances, streaming per-tensor error statistics, per-sample output metrics
(accuracy, relative L2 error) and the top-k agreement of class scores."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..result import Result

__all__ = ["Tolerance", "ErrorMetrics", "ErrorStats", "Metric", "accuracy", "align", "output_error", "run_metric",
           "topk_hits"]

# --- tolerances and streaming statistics -------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """Pass/fail limits; ``None`` means not checked. ``cosine`` and ``snr_db`` are minimums."""

    rel_l2: float | None = 0.1
    max_abs: float | None = None
    cosine: float | None = None
    snr_db: float | None = None

    def passed(self, m: ErrorMetrics) -> bool:
        """Whether metrics ``m`` (:meth:`ErrorStats.metrics`) are within every limit set (NaN never is)."""
        if m.nan:
            return False
        checks: list[tuple[float | None, float | None, Callable[[float, float], bool]]] = [
            (self.rel_l2, m.rel_l2, lambda v, t: v <= t),
            (self.max_abs, m.max_abs, lambda v, t: v <= t),
            (self.cosine, m.cosine, lambda v, t: v >= t),
            (self.snr_db, m.snr_db, lambda v, t: v >= t),
        ]
        for limit, value, ok in checks:
            if limit is None:
                continue
            if value is None:  # rel_l2/snr of an all-zero reference, or no data
                if m.max_abs not in (0.0, None):
                    return False
                continue
            if not ok(value, limit):
                return False
        return True

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """``"rel_l2=0.05,cosine=0.99"`` (a bare number is a rel_l2 limit)."""
        text = text.strip()
        try:
            return cls(rel_l2=float(text))
        except ValueError:
            pass
        values: dict[str, float | None] = {"rel_l2": None}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, val = part.partition("=")
            key = key.strip()
            if key not in ("rel_l2", "max_abs", "cosine", "snr_db"):
                raise DataError(f"unknown tolerance '{key}' in '{text}'",
                                hint="use rel_l2=, max_abs=, cosine= or snr_db=, e.g. 'rel_l2=0.05,cosine=0.99'")
            try:
                values[key] = float(val)
            except ValueError as exc:
                raise DataError(f"tolerance '{part}' is not a number", hint="write e.g. 'rel_l2=0.05'") from exc
        return cls(**values)

    def to_dict(self) -> dict[str, float | None]:
        """The limits by name (None: not checked)."""
        return {"rel_l2": self.rel_l2, "max_abs": self.max_abs, "cosine": self.cosine, "snr_db": self.snr_db}


@dataclass(frozen=True)
class ErrorMetrics(Result):
    """The error of a candidate tensor against its reference (:meth:`ErrorStats.metrics`): largest and mean absolute
    difference, relative L2 error, cosine similarity, signal-to-noise ratio in dB (None where undefined: no data, a
    zero reference, an exact match), non-finite candidate values counted, samples seen, and ``padded``: the pairs
    whose shapes differed (a data-dependent length, see :func:`align`), compared zero-padded."""

    max_abs: float | None
    mean_abs: float | None
    rel_l2: float | None
    cosine: float | None
    snr_db: float | None
    nan: int
    samples: int
    padded: int = 0


def align(ref: np.ndarray, cand: np.ndarray, where: str = "") -> tuple[np.ndarray, np.ndarray, bool]:
    """``ref`` and ``cand`` at one shape. A tensor whose length depends on its values (a decoder that stops at its end
    token, a detector's box count) may differ between reference and candidate: both are zero-padded to the longer
    length on each axis, so the missing or extra elements count as error in full; the bool says it happened.
    Arrays of different rank raise a DataError (naming ``where``)."""
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.shape == cand.shape:
        return ref, cand, False
    if ref.ndim != cand.ndim:
        raise DataError(f"{where or 'the tensor'}: reference shape {list(ref.shape)} and candidate shape "
                        f"{list(cand.shape)} differ in rank", hint="the candidate must compute the same tensor as the "
                                                                    "reference")
    shape = tuple(max(a, b) for a, b in zip(ref.shape, cand.shape))

    def pad(x: np.ndarray) -> np.ndarray:
        return np.pad(x, [(0, n - k) for n, k in zip(shape, x.shape)])

    return pad(ref), pad(cand), True


class ErrorStats:
    """Running sums for one tensor pair: O(1) memory however many samples are seen."""

    __slots__ = ("elements", "samples", "sum_abs", "max_abs", "sq_err", "sq_ref", "sq_cand", "dot", "nan", "padded")

    def __init__(self) -> None:
        self.elements = self.samples = self.nan = self.padded = 0
        self.sum_abs = self.max_abs = self.sq_err = self.sq_ref = self.sq_cand = self.dot = 0.0

    def update(self, ref: np.ndarray, cand: np.ndarray, samples: int = 1) -> None:
        """Add one pair of arrays (``samples`` samples); non-finite candidate values are counted, not summed; shapes
        that differ in a length are compared zero-padded (:func:`align`) and counted."""
        ref, cand, padded = align(ref, cand)
        self.padded += padded
        # float32 element-wise work, float64 accumulation (pairwise sums): accurate and twice as fast as float64
        work = np.float64 if np.float64 in (ref.dtype, cand.dtype) else np.float32
        r = ref.astype(work, copy=False).reshape(-1)
        c = cand.astype(work, copy=False).reshape(-1)
        finite = np.isfinite(c)
        if not finite.all():
            self.nan += int(c.size - np.count_nonzero(finite))
            r, c = r[finite], c[finite]
        self.samples += samples
        self.elements += int(r.size)
        if r.size:
            d = c - r
            ad = np.abs(d)
            self.sum_abs += float(ad.sum(dtype=np.float64))
            self.max_abs = max(self.max_abs, float(ad.max()))
            # element-wise products, not BLAS dot: BLAS threads fight ONNX Runtime's for the cores
            self.sq_err += float(np.multiply(d, d).sum(dtype=np.float64))
            self.sq_ref += float(np.multiply(r, r).sum(dtype=np.float64))
            self.sq_cand += float(np.multiply(c, c).sum(dtype=np.float64))
            self.dot += float(np.multiply(r, c).sum(dtype=np.float64))

    def merge(self, other: ErrorStats) -> None:
        """Add another pair's sums (e.g. one batch's, computed on a worker thread)."""
        self.elements += other.elements
        self.samples += other.samples
        self.nan += other.nan
        self.padded += other.padded
        self.sum_abs += other.sum_abs
        self.max_abs = max(self.max_abs, other.max_abs)
        self.sq_err += other.sq_err
        self.sq_ref += other.sq_ref
        self.sq_cand += other.sq_cand
        self.dot += other.dot

    def metrics(self) -> ErrorMetrics:
        """max_abs, mean_abs, rel_l2, cosine, snr_db (None where undefined: zero reference or exact match)."""
        n = self.elements
        rel = math.sqrt(self.sq_err / self.sq_ref) if self.sq_ref > 0 else (0.0 if self.sq_err == 0 else None)
        if self.sq_ref > 0 and self.sq_cand > 0:
            cos = self.dot / math.sqrt(self.sq_ref * self.sq_cand)
        else:
            cos = 1.0 if self.sq_ref == self.sq_cand else 0.0
        snr = 10.0 * math.log10(self.sq_ref / self.sq_err) if self.sq_err > 0 and self.sq_ref > 0 else None
        return ErrorMetrics(
            max_abs=self.max_abs if n else None,
            mean_abs=self.sum_abs / n if n else None,
            rel_l2=rel if n else None,
            cosine=min(1.0, max(-1.0, cos)) if n else None,
            snr_db=snr,
            nan=self.nan,
            samples=self.samples,
            padded=self.padded,
        )


# --- metrics on outputs (accuracy, ...) --------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A per-sample metric averaged over the data: ``fn(outputs, batch, ref_outputs) -> array (batch,)``.

    ``batch`` holds the batch's arrays (inputs and extras such as ``label``); ``ref_outputs`` the reference
    outputs for the same batch. ``higher_is_better`` says which way is good (accuracy: True; errors: False).
    """

    name: str
    fn: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray], Mapping[str, np.ndarray]], np.ndarray]
    higher_is_better: bool = True
    needs: tuple[str, ...] = ()


def _pick(outputs: Mapping[str, np.ndarray], output: str | None) -> np.ndarray:
    if output is None:
        return next(iter(outputs.values()))
    return outputs[output]


def accuracy(label: str = "label", output: str | None = None) -> Metric:
    """Top-1 accuracy: argmax over the last axis of ``output`` (default: the first output) equals ``batch[label]``."""

    def fn(outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray],
           ref: Mapping[str, np.ndarray]) -> np.ndarray:
        logits = _pick(outputs, output)
        return (np.argmax(logits.reshape(len(logits), -1), axis=-1) == batch[label].reshape(-1)).astype(np.float64)

    return Metric("accuracy", fn, True, (label,))


def output_error(output: str | None = None) -> Metric:
    """Per-sample relative L2 error of ``output`` against the reference output (lower is better)."""

    def fn(outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray],
           ref: Mapping[str, np.ndarray]) -> np.ndarray:
        r, c, _ = align((ref[output] if output is not None else ref[next(iter(outputs))]).astype(np.float64),
                        _pick(outputs, output).astype(np.float64), output or "the first output")
        c, r = c.reshape(len(c), -1), r.reshape(len(r), -1)
        num = np.sqrt(((c - r) ** 2).sum(axis=1))
        den = np.sqrt((r**2).sum(axis=1))
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), num)
        return np.where(np.isfinite(out), out, np.inf)

    return Metric("rel_l2", fn, False)


def run_metric(metric: Metric, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray],
               ref: Mapping[str, np.ndarray], where: str) -> np.ndarray:
    """``metric`` per sample of one batch as float64 (a DataError naming ``where`` when an array it needs is
    missing)."""
    missing = [k for k in metric.needs if k not in batch]
    if missing:
        raise DataError(f"metric '{metric.name}' needs array(s) {missing} in {where}",
                        hint=f"add them to the .npz (e.g. numpy.savez(..., {missing[0]}=labels)) or choose "
                             "the rel_l2 metric")
    return np.asarray(metric.fn(outputs, batch, ref), dtype=np.float64).reshape(-1)


def topk_hits(ref: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    """Per sample of [samples, classes] scores: is the reference's top-1 class among the candidate's ``k`` best."""
    r = np.argmax(ref, axis=-1)
    if k == 1:
        return (np.argmax(cand, axis=-1) == r)
    top = np.argpartition(-cand, kth=k - 1, axis=-1)[:, :k]
    return (top == r[:, None]).any(axis=1)
