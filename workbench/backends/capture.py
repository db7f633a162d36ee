"""Captures of intermediate tensors within a memory budget.

Exposing every intermediate tensor as an extra ONNX Runtime output keeps all of a batch's activations alive at
once (IS-Net at 1024x1024: 1.5 GB per sample and model). Layerwise compare and the debugger's sensitivity plan
their captures here: the bytes one sample's captured tensors need (shape inference at the data's concrete input
shapes; tensors whose shapes stay unknown are measured on the first sample), against a budget (a share of the
available memory, divided by the workers), give the batch step and, where one sample alone does not fit, groups
of tensors captured by several runs per batch, each exposing a subset. The plan is made on the client, so a Dask
cluster runs the same batches and groups as the local threads. Engines that capture are ``low_memory`` (no
arena: memory is returned after each run), as calibration's are.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import DataError, ModelError
from ..graph import tensor_infos
from ..graph.shapes import skeleton_at
from .ort import OrtEngine

__all__ = ["BUDGET_ENV", "BUDGET_SHARE", "CapturePlan", "available_memory", "capture_budget", "format_bytes",
           "measure_bytes", "plan_capture", "sample_bytes"]

#: environment variable overriding the budget: bytes in flight for captures, all workers together ("8G", "512M")
BUDGET_ENV = "WORKBENCH_MEMORY_BUDGET"
#: share of the available memory that captures may hold (the rest: sessions, weights, ONNX Runtime's own buffers)
BUDGET_SHARE = 0.5
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def format_bytes(n: float) -> str:
    """``n`` bytes in words (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop returns


def available_memory() -> int:
    """Bytes this process may still take: ``MemAvailable`` of /proc/meminfo (else free pages from sysconf),
    lowered to the cgroup's limit where one is set."""
    avail = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if not avail:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 4 << 30  # no way to ask: a modest default
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        if limit != "max":
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


def _parse_bytes(text: str) -> int:
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in _UNITS and s[-1:] else ""
    try:
        value = float(s[: len(s) - len(unit)] if unit else s)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise DataError(f"{BUDGET_ENV}={text!r} is not a size in bytes", hint="e.g. 8G, 512M or 2000000000")
    return int(value * _UNITS[unit])


def capture_budget(workers: int, budget: int | None = None) -> int:
    """Bytes one worker's captures may hold: ``budget`` (all workers together), else ``$WORKBENCH_MEMORY_BUDGET``,
    else ``BUDGET_SHARE`` of :func:`available_memory`; divided by ``workers``."""
    if budget is None:
        env = os.environ.get(BUDGET_ENV)
        total = _parse_bytes(env) if env else int(available_memory() * BUDGET_SHARE)
    else:
        if int(budget) <= 0:
            raise DataError(f"memory_budget={budget} is not a positive number of bytes", hint="e.g. 8 << 30")
        total = int(budget)
    return max(1, total // max(1, workers))


def _itemsize(dtype: str) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 4  # bfloat16, float8...: at most float32's


def sample_bytes(model: onnx.ModelProto, names: Sequence[str], feeds: Mapping[str, np.ndarray], samples: int,
                 *, where: str = "the model") -> tuple[dict[str, int], list[str]]:
    """({tensor: bytes per sample} from shape inference at the shapes of ``feeds`` (a batch of ``samples``),
    tensors whose shape inference leaves unknown). A tensor that does not grow with the batch counts whole."""
    try:
        infos = tensor_infos(skeleton_at(model, {k: v.shape for k, v in feeds.items()}, where))
    except ModelError:
        infos = {}
    known: dict[str, int] = {}
    unknown: list[str] = []
    for t in names:
        if t in feeds:
            known[t] = -(-feeds[t].nbytes // samples)
            continue
        info = infos.get(t)
        dims = [d for d in info.shape if isinstance(d, int) and d > 0] if info is not None and info.shape else []
        if info is None or info.shape is None or len(dims) != len(info.shape) or info.dtype == "unknown":
            unknown.append(t)
            continue
        known[t] = -(-int(np.prod(dims, dtype=np.int64)) * _itemsize(info.dtype) // samples)
    return known, unknown


@dataclass(frozen=True)
class CapturePlan:
    """Batch ``step`` and the ``groups`` of units (indices) captured by one run each, per batch."""

    step: int
    groups: tuple[tuple[int, ...], ...]
    per_sample: int  # bytes one sample's captures need (every group together, ``fixed`` included)
    budget: int  # bytes per worker

    def describe(self, requested: int) -> str | None:
        """A line saying how the budget shaped the run (None where it did not)."""
        if self.step >= requested and len(self.groups) == 1:
            return None
        runs = f", tensors captured in {len(self.groups)} runs per batch" if len(self.groups) > 1 else ""
        return (f"captured tensors need {format_bytes(self.per_sample)} per sample and the memory budget is "
                f"{format_bytes(self.budget)} per worker: batches of {self.step} sample(s){runs} "
                f"(set {BUDGET_ENV} to change the budget)")


def measure_bytes(engine: OrtEngine, feeds: Mapping[str, np.ndarray], names: Sequence[str], samples: int, *,
                  guess: int, budget: int) -> dict[str, int]:
    """{tensor: bytes per sample} measured by running ``engine`` (which outputs ``names``) on ``feeds`` (a batch of
    ``samples``), a few tensors per run: as many as ``budget`` holds if each is ``guess`` bytes per sample."""
    per_run = max(1, budget // max(1, guess * samples))
    out: dict[str, int] = {}
    for s in range(0, len(names), per_run):
        chunk = list(names[s : s + per_run])
        values = engine.run(feeds, chunk)
        for t in chunk:
            out[t] = -(-values[t].nbytes // samples)
        del values
    return out


def _cost(keys: set[Hashable], sizes: Mapping[Hashable, int]) -> int:
    return sum(sizes[k] for k in keys)


def plan_capture(units: Sequence[Sequence[Hashable]], sizes: Mapping[Hashable, int], *, labels: Sequence[str],
                 fixed: int, requested: int, fixed_step: int | None, budget: int, what: str, hint: str,
                 noun: str = "tensors", refuse: bool = True) -> CapturePlan | None:
    """Pack ``units`` (each the keys of the tensors one compared quantity needs captured) into runs.

    ``sizes``: bytes per sample of each key; ``fixed``: bytes per sample every run holds (outputs, inputs, working
    arrays). The batch step is the largest power of two up to ``requested`` whose whole capture fits ``budget``
    (a power of two, so a slightly different free memory rarely changes the batches); a model with a fixed batch
    size keeps ``fixed_step``. Where one step's capture does not fit, consecutive units are grouped so each run
    fits; where one unit alone does not, a :class:`DataError` names ``what``, the unit (``labels``: a name per
    unit; ``noun``: what the units are), the bytes and ``hint`` (None instead, without ``refuse``)."""
    every: set[Hashable] = set()
    for u in units:
        every.update(u)
    per_sample = fixed + _cost(every, sizes)
    if fixed_step:
        step = fixed_step
    else:
        fit = budget // max(1, per_sample)
        step = 1 if fit < 1 else min(max(1, requested), 1 << (int(fit).bit_length() - 1))
    if step * per_sample <= budget or not units:
        return CapturePlan(step, (tuple(range(len(units))),), per_sample, budget)
    room = budget // step - fixed
    groups: list[tuple[int, ...]] = []
    current: list[int] = []
    keys: set[Hashable] = set()
    for i, u in enumerate(units):
        alone = _cost(set(u), sizes)
        if alone > room:
            if not refuse:
                return None
            raise DataError(
                f"{what}: {len(units)} {noun} need {format_bytes(per_sample)} per sample, and '{labels[i]}' alone "
                f"needs {format_bytes((alone + fixed) * step)} for {step} sample(s) with the outputs and inputs, more "
                f"than the memory budget of {format_bytes(budget)} per worker", hint=hint)
        grown = keys | set(u)
        if current and _cost(grown, sizes) > room:
            groups.append(tuple(current))
            current, grown = [], set(u)
        current.append(i)
        keys = grown
    groups.append(tuple(current))
    return CapturePlan(step, tuple(groups), per_sample, budget)
