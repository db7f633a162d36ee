"""The one data layer: how calibration, compare, debug, profile and the tabs read a model's inputs.

A :class:`Dataset` holds named columns (model inputs and extras such as ``label``), each with its own
*sample axis*: the axis that indexes samples (an int), or ``None`` for an input every sample shares (a 0-d
sample rate, an initial state), which every batch gets as is. Batches concatenate along each column's own
axis, so a recurrent state ``[2, batch, 128]`` batched on axis 1 works beside an audio chunk ``[batch, 512]``.

Sources (:func:`load_data`): a ``.npz`` (one array per input; a ``__sample_axes__`` JSON entry may record the
axes), a dict of arrays, an iterable of feed dicts (concatenated), a folder of images (read with Pillow and
a recorded :class:`~workbench.recipe.Preprocessing`), of ``.wav`` files (standard library ``wave``, resampled
linearly, cut into chunks) or of ``.npy`` files (one sample each), a ``.wav`` file, and token ids (a ``.txt``
with one sequence per line, padded/cut to ``length``).

Sample axes are inferred from the model's declared input shapes where that is unambiguous (a 0-d input is
fixed; an input with one dynamic axis is batched on it; the dynamic axis sharing a resolved input's symbol or
matching the other inputs' sample count; a batch-named symbol; else axis 0 of the leading dynamic axis when no
other input says otherwise), and a :class:`~workbench.errors.DataError` asks for ``sample_axes={...}``
(CLI ``--sample-axis NAME=AXIS``) only when it is not.

*Runs*: ``run_length`` N says each model run is exactly N consecutive entries of the sample axis, never split
nor merged: the model's own fixed batch size, or one the user gives (``run_length=N``, CLI ``--run-length N``,
an ``.npz``'s ``__run_length__`` entry) for a dynamic axis the model mixes across, such as the time axis of a
sequence model (an LSTM over ``[sequence_length, features]``: batches of another length compute something else).
Every consumer reads data through :meth:`Dataset.batches`, which gives exactly one run per batch and leaves out
a last incomplete run, saying so. A sample axis declared with a sequence/time name (``sequence_length``,
``seq_len``, ``time``, ``frames``, ...) and no run length is a :class:`~workbench.errors.DataError`: the run
length is never guessed.
"""

from __future__ import annotations

import json
import os
import re
import warnings as _warnings
import wave
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import onnx

from .cancel import Cancel, cancelled
from .errors import DataError
from .graph import TensorInfo, tensor_infos
from .recipe import Preprocessing
from .result import Result

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Preprocessing",
    "Dataset",
    "DataColumn",
    "DataSummary",
    "Batch",
    "load_data",
    "random_data",
    "timing_feeds",
    "find_data",
    "data_kind",
    "parse_sample_axes",
    "parse_run_length",
    "preprocessing_for",
    "resize_image",
    "image_array",
    "model_inputs",
    "output_sample_axes",
    "samples_first",
    "IMAGE_SUFFIXES",
    "AUDIO_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
AUDIO_SUFFIXES = (".wav",)
AXES_KEY = "__sample_axes__"
RUN_KEY = "__run_length__"
_BATCH_NAMES = ("n", "b", "bs", "batch", "batch_size", "batchsize", "num_samples")
_SEQUENCE_WORDS = {"seq", "seqlen", "sequence", "time", "times", "timestep", "timesteps", "steps", "frame", "frames",
                   "nframes", "len", "length"}
Axes = Mapping[str, "int | None"]
DataSource = Union["Dataset", str, os.PathLike[str], Mapping[str, Any], Iterable[Mapping[str, Any]]]  # noqa: UP007
"""What :func:`load_data` reads: a Dataset, a path, a dict of arrays or an iterable of feed dicts."""


# --- the model's side ---------------------------------------------------------------------------------


def model_inputs(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """{input name: TensorInfo} of the graph inputs that are not initializers, in order."""
    inits = {i.name for i in model.graph.initializer}
    infos = tensor_infos(model)
    return {i.name: infos[i.name] for i in model.graph.input if i.name not in inits}


def _fixed(d: object) -> int | None:
    """A declared dim's size when it is a fixed positive int, else None (a symbol, unknown or 0)."""
    return d if isinstance(d, int) and d > 0 else None


def _dynamic(d: object) -> bool:
    return _fixed(d) is None


def _batch_named(d: Any) -> bool:
    return isinstance(d, str) and (d.lower() in _BATCH_NAMES or "batch" in d.lower())


def _sequence_named(d: object) -> bool:
    """A symbolic dim named like a sequence/time axis (``sequence_length``, ``seq_len``, ``time``, ``num_frames``)."""
    if not isinstance(d, str):
        return False
    words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", d).lower()) if w]
    return any(w in _SEQUENCE_WORDS for w in words)


def _uneven_fixed_batch(dims: Sequence[Any], shape: Sequence[int]) -> bool:
    """A fixed leading dim > 1 (a model exported at batch 3) where the data has another count on axis 0 and
    matches every other dim: the samples are stacked on axis 0, in runs of that batch (the numpy convention)."""
    return (len(dims) == len(shape) > 0 and not _dynamic(dims[0]) and int(dims[0]) > 1 and shape[0] != dims[0]
            and all(_dynamic(d) or d == s for d, s in zip(dims[1:], shape[1:])))


def parse_sample_axes(specs: Iterable[str] | str | None) -> dict[str, int | None]:
    """``["state=1", "sr=none"]`` (CLI ``--sample-axis NAME=AXIS``; ``none``/``fixed``: shared by every sample)."""
    if specs is None:
        return {}
    items = [specs] if isinstance(specs, str) else list(specs)
    out: dict[str, int | None] = {}
    for item in (p.strip() for s in items for p in s.split(",")):
        if not item:
            continue
        name, sep, axis = item.rpartition("=")
        if not sep or not name:
            raise DataError(f"--sample-axis '{item}' is not NAME=AXIS",
                            hint="e.g. --sample-axis state=1 --sample-axis sr=none (none: every sample shares it)")
        if axis.strip().lower() in ("none", "fixed", "null", "-"):
            out[name] = None
            continue
        try:
            out[name] = int(axis)
        except ValueError as exc:
            raise DataError(f"--sample-axis '{item}': '{axis}' is not an axis number or 'none'",
                            hint="e.g. --sample-axis state=1") from exc
    return out


def parse_run_length(value: str | int | None) -> int | None:
    """A run length (CLI ``--run-length N``): a whole number >= 1 of consecutive sample-axis entries per model run;
    ``None``, ``""`` or ``none``: no run length (batches may cut the sample axis anywhere)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        n = int(str(value).strip())
    except ValueError as exc:
        raise DataError(f"--run-length '{value}' is not a whole number",
                        hint="e.g. --run-length 32: each model run is 32 consecutive entries of the sample axis") from exc
    if n < 1:
        raise DataError(f"--run-length {n} is not positive", hint="give the number of consecutive entries per run, "
                        "e.g. --run-length 32")
    return n


def _fix_text(axes: Mapping[str, int | None]) -> str:
    py = ", ".join(f"'{k}': {v}" for k, v in axes.items())
    cli = " ".join(f"--sample-axis {k}={'none' if v is None else v}" for k, v in axes.items())
    return f"pass sample_axes={{{py}}} (CLI: {cli})"


def _infer_axes(shapes: Mapping[str, tuple[int, ...]], declared: Mapping[str, Any],
                given: Mapping[str, int | None], where: str) -> dict[str, int | None]:
    """Each column's sample axis (see the module docstring); ``declared``: {name: declared shape or None}."""
    axes: dict[str, int | None] = {}
    pending: dict[str, list[int]] = {}
    for name, shape in shapes.items():
        if name in given:
            ax = given[name]
            if ax is not None:
                if not -len(shape) <= ax < len(shape):
                    raise DataError(f"sample axis {ax} of '{name}' in {where} is out of range for its shape "
                                    f"{list(shape)}", hint=f"give an axis in 0..{len(shape) - 1}, or none (fixed)")
                ax %= len(shape)
            axes[name] = ax
            continue
        dims = declared.get(name)
        if len(shape) == 0:
            axes[name] = None
            continue
        if dims is None or len(dims) != len(shape):
            axes[name] = 0  # an extra (label) or an input of unknown rank: samples first, the numpy convention
            continue
        cands = [i for i, (d, s) in enumerate(zip(dims, shape))
                 if _dynamic(d) or (d != s and s % d == 0)]  # dynamic, or a fixed batch stacked several times
        if not cands and _uneven_fixed_batch(dims, shape):
            cands = [0]  # a fixed batch > 1 the samples do not fill evenly: batches drop the remainder
        if not cands:
            axes[name] = None  # matches the declared shape exactly and nothing is dynamic: one value for all
        elif len(cands) == 1:
            axes[name] = cands[0]
        else:
            pending[name] = cands
    while pending:
        counts = {shapes[k][a] for k, a in axes.items() if a is not None and k in declared}
        symbols = {declared[k][a] for k, a in axes.items()
                   if a is not None and declared.get(k) is not None and isinstance(declared[k][a], str)}
        progress = False
        for name, cands in list(pending.items()):
            dims, shape = declared[name], shapes[name]
            pick = [i for i in cands if isinstance(dims[i], str) and dims[i] in symbols]
            if len(pick) != 1 and len(counts) == 1:
                pick = [i for i in cands if shape[i] in counts]
            if len(pick) != 1 and not counts:
                pick = [i for i in cands if _batch_named(dims[i])]
                if len(pick) != 1 and 0 in cands:
                    pick = [0]
            if len(pick) == 1:
                axes[name] = pick[0]
                del pending[name]
                progress = True
        if not progress:
            name, cands = next(iter(pending.items()))
            sizes = ", ".join(f"axis {i} (size {shapes[name][i]}, declared {declared[name][i]!r})" for i in cands)
            raise DataError(f"cannot tell which axis of input '{name}' in {where} indexes samples: candidates "
                            f"{sizes}; the other inputs have {sorted(counts) or 'no'} samples",
                            hint=_fix_text({name: cands[0]}) + f", or none if every sample shares '{name}'")
    return axes


# --- columns -------------------------------------------------------------------------------------------


class _Files:
    """A column read lazily, one file per sample (image folders: memory stays that of one batch)."""

    def __init__(self, files: Sequence[Path], load: Callable[[Path], np.ndarray], sample_shape: tuple[int, ...],
                 dtype: np.dtype) -> None:
        self.files, self.load, self.sample_shape, self.dtype = list(files), load, sample_shape, dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    def sliced(self, start: int, stop: int) -> _Files:
        return _Files(self.files[start:stop], self.load, self.sample_shape, self.dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        items = []
        for f in self.files[start:stop]:
            x = self.load(f)
            if x.shape != self.sample_shape:
                raise DataError(f"{f} gives a sample of shape {list(x.shape)}, the others {list(self.sample_shape)}",
                                hint="resize every file to one size (preprocessing size=[height, width], CLI --size)")
            items.append(x)
        if not items:
            return np.zeros((0, *self.sample_shape), self.dtype)
        return np.stack(items)


def _take(arr: np.ndarray | _Files, axis: int | None, start: int, stop: int) -> np.ndarray:
    """Samples ``start:stop`` of a column along its sample ``axis``; a shared column (axis None) whole."""
    if isinstance(arr, _Files):
        return arr.read(start, stop)
    if axis is None:
        return arr
    index = (slice(None),) * axis + (slice(start, stop),)
    return arr[index]


@dataclass(frozen=True)
class DataColumn:
    """One array of a dataset: its shape and its sample axis (None: shared by every sample)."""

    shape: tuple[int, ...]
    sample_axis: int | None


@dataclass(frozen=True)
class DataSummary(Result):
    """What a dataset is (:meth:`Dataset.describe`): its description, sample count, each array's shape and sample
    axis, the preprocessing that made it from files (None for arrays given as they are) and its run length
    (entries of the sample axis per model run; None: batches may cut it anywhere)."""

    data: str
    samples: int
    inputs: dict[str, DataColumn]
    preprocessing: Preprocessing | None = None
    run_length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON types; ``run_length`` only when the data has one."""
        out = super().to_dict()
        if self.run_length is None:
            del out["run_length"]
        return out


@dataclass(frozen=True)
class Batch:
    """One batch: ``feeds`` (the model's inputs), ``arrays`` (inputs and extras), ``samples``, ``start``."""

    feeds: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]
    samples: int
    start: int


class Dataset:
    """Named columns with a per-column sample axis (None: shared by every sample); see the module docstring.

    ``inputs``: the model inputs (feeds) when bound to a model (:meth:`bind`), else every column.
    ``run_length`` (given): each model run is exactly this many consecutive entries of the sample axis (a sequence
    model's time axis), kept as ``given_run_length`` across :meth:`bind`; the attribute ``run_length`` is the one
    in force: the given one, else the model's fixed batch size when its sample axis is a fixed dim (``fixed_run``,
    set by :meth:`bind`), else None (batches of any size).
    """

    def __init__(self, arrays: Mapping[str, Any], sample_axes: Axes | None = None, *, description: str = "arrays",
                 preprocessing: Preprocessing | None = None, inputs: Sequence[str] | None = None,
                 run_length: int | None = None, fixed_run: int | None = None, given: Axes | None = None,
                 strict: bool = False) -> None:
        self._cols: dict[str, np.ndarray | _Files] = {
            str(k): (v if isinstance(v, _Files) else np.asarray(v)) for k, v in arrays.items()}
        if not self._cols:
            raise DataError(f"{description} holds no arrays", hint="give one array per model input, keyed by its name")
        self.given = dict(given if given is not None else (sample_axes or {}))
        shapes = {k: tuple(v.shape) for k, v in self._cols.items()}
        self.sample_axes: dict[str, int | None] = _infer_axes(shapes, {}, dict(sample_axes or {}), description)
        self.description = description
        self.preprocessing = preprocessing
        self.inputs = list(inputs) if inputs is not None else list(self._cols)
        self.given_run_length = parse_run_length(run_length)
        self.fixed_run = fixed_run
        self.run_length: int | None = self.given_run_length or fixed_run
        counts = {k: shapes[k][a] for k, a in self.sample_axes.items() if a is not None}
        self._conflict: DataError | None = None
        if len(set(counts.values())) > 1:
            self._conflict = DataError(
                f"the arrays in {description} have different numbers of samples: "
                + ", ".join(f"'{k}' {n} on axis {self.sample_axes[k]}" for k, n in counts.items()),
                hint="give every array the same number of samples, or say which axis indexes them: "
                     + _fix_text({k: self.sample_axes[k] for k in list(counts)[:2]}))
            if strict:
                raise self._conflict
        self._samples = next(iter(counts.values())) if counts else 1

    @property
    def samples(self) -> int:
        """How many samples (1 when every column is shared)."""
        if self._conflict is not None:  # axes were only guessed (no model yet) and do not agree
            raise self._conflict
        return self._samples

    # --- reading ---

    def __len__(self) -> int:
        return self.samples

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    @property
    def names(self) -> list[str]:
        """Every column's name."""
        return list(self._cols)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Every column as a whole array (lazily read columns are read now)."""
        return {k: self.array(k) for k in self._cols}

    def shape(self, name: str) -> tuple[int, ...]:
        """The whole shape of one column (its sample axis included)."""
        return tuple(self._cols[name].shape)

    def array(self, name: str) -> np.ndarray:
        """The whole column (a lazily read one is read now)."""
        col = self._cols[name]
        return col.read(0, len(col.files)) if isinstance(col, _Files) else col

    def _slice(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: _take(v, self.sample_axes[k], start, stop) for k, v in self._cols.items()}

    def __getitem__(self, index: slice) -> Dataset:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("a Dataset is sliced by samples: ds[start:stop]")
        start, stop, _ = index.indices(self.samples)
        cols = {k: (v.sliced(start, stop) if isinstance(v, _Files) else _take(v, self.sample_axes[k], start, stop))
                for k, v in self._cols.items()}
        out = Dataset(cols, self.sample_axes, description=self.description, preprocessing=self.preprocessing,
                      inputs=self.inputs, run_length=self.given_run_length, fixed_run=self.fixed_run,
                      given=self.given)
        if all(a is None for a in self.sample_axes.values()):
            out._samples = max(0, stop - start)
        return out

    def take(self, n: int | None) -> Dataset:
        """The first ``n`` samples (all when None)."""
        return self if n is None or n >= self.samples else self[:n]

    def batch(self, start: int, stop: int) -> Batch:
        """Samples ``start:stop`` as a :class:`Batch` (shared columns whole)."""
        arrays = self._slice(start, stop)
        return Batch({k: arrays[k] for k in self.inputs}, arrays, max(0, min(stop, self.samples) - start), start)

    def _run_text(self) -> str:
        run = self.run_length
        if self.given_run_length:
            return f"each model run is {run} consecutive entries of the sample axis (run length {run})"
        return f"the model's batch is fixed at {run}"

    def batches(self, batch_size: int = 16, *, max_samples: int | None = None, cancel: Cancel = None,
                warnings: list[str] | None = None) -> Iterator[Batch]:
        """Batches of ``batch_size`` samples, each column concatenated along its own sample axis, shared columns as
        they are; with a :attr:`run_length` exactly one run per batch, whatever ``batch_size``, and a last
        incomplete run left out (said in ``warnings``, else as a UserWarning). Once ``cancel`` says stop, no
        further batch comes and ``warnings`` says how many samples were given out."""
        n = self.samples if max_samples is None else min(self.samples, max_samples)
        run = self.run_length
        step = run or max(1, int(batch_size))
        usable = (n // step) * step if run else n
        if run and usable == 0 and n:
            limit = f" (max_samples {max_samples} of its {self.samples})" if n < self.samples else ""
            fix = (f"provide at least {step} samples, or export the model with a dynamic batch axis"
                   if not self.given_run_length else f"give at least {step} samples (max_samples counts entries of "
                   "the sample axis), or a shorter run length (run_length=N, CLI --run-length N)")
            what = (f"one run of {step} (the run length)" if self.given_run_length
                    else f"the model's fixed batch size {step}")
            raise DataError(f"{self.description} has {n} samples{limit}, fewer than {what}", hint=fix)
        if usable < n:
            msg = (f"{self._run_text()}: {n - usable} of {n} samples were dropped ({n} is not a "
                   f"multiple of {step}; the last {n - usable} are left out)")
            if warnings is not None:
                warnings.append(msg)
            else:  # no list to say it in (calibration): say it loudly
                _warnings.warn(msg, UserWarning, stacklevel=2)
        for start in range(0, usable, step):
            if cancelled(cancel):
                if warnings is not None:
                    warnings.append(f"cancelled after {start} samples")
                return
            yield self.batch(start, min(start + step, usable))

    def describe(self) -> DataSummary:
        """What the data is: description, samples, per-column shape and sample axis, preprocessing."""
        return DataSummary(self.description, self.samples,
                           {k: DataColumn(tuple(self.shape(k)), self.sample_axes[k]) for k in self._cols},
                           self.preprocessing, self.run_length)

    def __repr__(self) -> str:
        cols = ", ".join(f"{k}{list(self.shape(k))}@{self.sample_axes[k]}" for k in self._cols)
        runs = f" in runs of {self.run_length}" if self.run_length else ""
        return f"Dataset({self.description}: {self.samples} samples{runs}; {cols})"

    # --- binding to a model ---

    def bind(self, model: onnx.ModelProto, sample_axes: Axes | None = None, run_length: int | None = None) -> Dataset:
        """This data checked against ``model``'s inputs, with each input's sample axis inferred from the
        declared shapes (explicit ``sample_axes`` and those given earlier win) and its run length: ``run_length``
        or the one given earlier, which must agree with a fixed batch size on the sample axis; a sample axis
        declared with a sequence/time name needs one (see the module docstring)."""
        specs = model_inputs(model)
        missing = [n for n in specs if n not in self._cols]
        if missing:
            raise DataError(f"{self.description} has no array for model input(s) {missing} (it has {self.names})",
                            hint=f"give one array per model input, keyed by its name: {list(specs)}")
        given = {**self.given, **dict(sample_axes or {})}
        unknown = [k for k in given if k not in self._cols]
        if unknown:
            raise DataError(f"sample axes given for {unknown}, which {self.description} does not hold",
                            hint=f"name one of {self.names}")
        declared = {k: v.shape for k, v in specs.items()}
        shapes = {k: tuple(v.shape) for k, v in self._cols.items()}
        axes = _infer_axes(shapes, declared, given, self.description)
        fixed = None
        for k, a in axes.items():
            dims = declared.get(k)
            fixed = _fixed(dims[a]) if a is not None and dims is not None else None
            if fixed is not None:
                break
        run = parse_run_length(run_length) or self.given_run_length
        _check_run(run, fixed, axes, declared, shapes, self.description)
        out = Dataset(self._cols, axes, description=self.description, preprocessing=self.preprocessing,
                      inputs=list(specs), run_length=run, fixed_run=fixed, given=given, strict=True)
        if out.samples == 0:
            raise DataError(f"{self.description} holds zero samples: no samples to run the model on",
                            hint="provide 100-500 representative samples")
        return out


def _check_run(run: int | None, fixed: int | None, axes: Mapping[str, int | None], declared: Mapping[str, Any],
               shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """A given run length must fit the model (a fixed batch on the sample axis is the run); a sample axis named
    like a sequence/time axis needs one: batches cut it, and the model computes over the whole axis."""
    batched = {k: a for k, a in axes.items() if a is not None and k in declared}
    if run is not None and not batched:
        raise DataError(f"a run length ({run}) is given, but no model input in {where} has a sample axis",
                        hint="drop run_length (CLI --run-length): every input is shared by every run")
    if run is not None and fixed is not None and run != fixed:
        raise DataError(f"run length {run} given, but the model's batch is fixed at {fixed} on the sample axis",
                        hint=f"drop run_length (CLI --run-length): each run is the model's fixed {fixed} entries")
    if run is not None or fixed is not None:
        return
    for k, a in batched.items():
        dims = declared[k]
        if dims is not None and a is not None and _sequence_named(dims[a]):
            n = shapes[k][a]
            raise DataError(
                f"input '{k}' has its samples on axis {a}, declared '{dims[a]}': a sequence/time axis the model "
                f"computes over as a whole, so feeding its {n} entries in batches would change what the model "
                f"computes, and the run length is not known", hint=f"say how many consecutive entries make one model "
                f"run: run_length=N (CLI --run-length N; {n} runs the data as one sequence), or give the samples "
                f"on another axis (sample_axes, CLI --sample-axis {k}=AXIS)")


# --- sources -------------------------------------------------------------------------------------------


def load_data(source: DataSource, model: onnx.ModelProto | None = None, *, sample_axes: Axes | None = None,
              preprocessing: Preprocessing | None = None, input: str | None = None,
              extra: Mapping[str, Any] | None = None, run_length: int | None = None) -> Dataset:
    """A :class:`Dataset` from ``source``, bound to ``model`` when given (see the module docstring).

    ``source``: a Dataset, a ``.npz``/``.npy``/``.wav``/``.txt`` path, a folder (images, ``.wav`` or ``.npy``
    files), a dict of arrays or an iterable of feed dicts. ``preprocessing`` says how files become samples
    (default: what the model's input shape implies, recorded on the dataset); ``input`` which model input the
    files feed (default: the one that fits); ``extra`` arrays for the other inputs (e.g. a sample rate);
    ``run_length``: each model run is exactly this many consecutive entries of the sample axis.
    """
    if isinstance(source, Dataset):
        ds = source
    elif isinstance(source, (str, os.PathLike)):
        ds = _from_path(Path(source), model, preprocessing, input, extra)
    elif isinstance(source, Mapping):
        ds = Dataset({**{str(k): v for k, v in source.items()}, **dict(extra or {})}, sample_axes if model is None
                     else None, description="arrays", given=sample_axes)
    elif isinstance(source, Iterable) and not isinstance(source, (bytes, np.ndarray)):
        ds = _from_batches(source, model, sample_axes, run_length)
    else:
        raise DataError(f"cannot read data from a {type(source).__name__}",
                        hint="pass an .npz path, a folder of images or audio, a dict of arrays or a Dataset")
    if model is not None:
        return ds.bind(model, sample_axes, run_length)
    if run_length is not None:
        return Dataset(ds._cols, ds.sample_axes, description=ds.description, preprocessing=ds.preprocessing,
                       inputs=ds.inputs, run_length=run_length, given=ds.given)
    return ds


def _from_batches(batches: Iterable[Any], model: onnx.ModelProto | None, sample_axes: Axes | None,
                  run_length: int | None) -> Dataset:
    parts: list[Mapping[str, Any]] = []
    for i, b in enumerate(batches):
        if not isinstance(b, Mapping):
            raise DataError(f"batch {i} of the data is a {type(b).__name__}, not a dict of arrays",
                            hint="yield {input_name: array} for each batch")
        parts.append(b)
    if not parts:
        raise DataError("the data holds no batches", hint="provide 100-500 representative samples")
    first = Dataset(parts[0], description="batches", given=sample_axes, run_length=run_length)
    if model is not None:
        first = first.bind(model, sample_axes)
    arrays = {}
    for k, ax in first.sample_axes.items():
        arrays[k] = parts[0][k] if ax is None else np.concatenate([np.asarray(p[k]) for p in parts], axis=ax)
    return Dataset(arrays, first.sample_axes, description=f"{len(parts)} batches", given=first.given,
                   run_length=run_length)


def _from_path(path: Path, model: onnx.ModelProto | None, pre: Preprocessing | None, input: str | None,
               extra: Mapping[str, Any] | None) -> Dataset:
    if not path.exists():
        raise DataError(f"data not found: {path} does not exist",
                        hint="pass an .npz with one array per model input, or a folder of images or .wav files")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        kinds = {"image": [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES],
                 "audio": [f for f in files if f.suffix.lower() in AUDIO_SUFFIXES],
                 "npy": [f for f in files if f.suffix.lower() == ".npy"]}
        found = {k: v for k, v in kinds.items() if v}
        if pre is not None and pre.kind in ("image", "audio") and found.get(pre.kind):
            kind = pre.kind
        elif len(found) == 1:
            kind = next(iter(found))
        elif not found:
            raise DataError(f"no image, .wav or .npy files in {path}",
                            hint=f"put 100-500 samples there ({', '.join(IMAGE_SUFFIXES)}, .wav, .npy), or pass an .npz")
        else:
            raise DataError(f"{path} mixes {' and '.join(found)} files", hint="keep one kind of sample per folder")
        if kind == "image":
            return _images(found["image"], path, model, pre, input, extra)
        if kind == "audio":
            return _audio(found["audio"], path, model, pre, input, extra)
        return _npy_files(found["npy"], path, model, input, extra)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz(path, extra)
    if suffix == ".npy":
        return _npy_files([path], path, model, input, extra, one_file=True)
    if suffix in AUDIO_SUFFIXES:
        return _audio([path], path, model, pre, input, extra)
    if suffix in IMAGE_SUFFIXES:
        return _images([path], path, model, pre, input, extra)
    if suffix == ".txt":
        return _tokens(path, model, pre, input, extra)
    raise DataError(f"cannot read {path}: unknown kind of data file '{suffix}'",
                    hint="use an .npz (one array per input), a folder of images or .wav files, or a .txt of token ids")


def data_kind(source: object) -> str:
    """What a path holds: image | audio | tokens | npz | npy | arrays (not a path) | unknown."""
    if not isinstance(source, (str, os.PathLike)):
        return "arrays"
    path = Path(source)
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.rglob("*") if p.is_file()}
        for kind, known in (("image", IMAGE_SUFFIXES), ("audio", AUDIO_SUFFIXES), ("npy", (".npy",))):
            if suffixes & set(known):
                return kind
        return "unknown"
    suffix = path.suffix.lower()
    return {".npz": "npz", ".npy": "npy", ".txt": "tokens"}.get(
        suffix, "image" if suffix in IMAGE_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else "unknown")


def _npz(path: Path, extra: Mapping[str, Any] | None) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}",
                        hint="save the data with numpy.savez(path, **{input_name: array})") from exc
    axes: dict[str, int | None] = {}
    run = None
    if RUN_KEY in arrays:
        raw_run = arrays.pop(RUN_KEY)
        try:
            run = parse_run_length(str(raw_run.item() if raw_run.ndim == 0 else raw_run))
        except DataError as exc:
            raise DataError(f"{path}: the {RUN_KEY} entry is not a run length ({exc.message})",
                            hint="write it as numpy.array(32): the entries of the sample axis per model run") from exc
    if AXES_KEY in arrays:
        raw = arrays.pop(AXES_KEY)
        try:
            axes = {str(k): (None if v is None else int(v)) for k, v in json.loads(str(raw)).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}: the {AXES_KEY} entry is not JSON {{name: axis or null}}",
                            hint=f"write it as numpy.array(json.dumps({{'state': 1, 'sr': None}})) ({exc})") from exc
    return Dataset({**arrays, **dict(extra or {})}, axes, description=str(path), given=axes, run_length=run)


def _target_input(model: onnx.ModelProto | None, input: str | None, ranks: Sequence[int], what: str,
                  where: Path) -> tuple[str, Any]:
    """The model input that files of ``what`` feed: ``input``, else the only one of a fitting rank."""
    if model is None:
        return input or "input", None
    specs = model_inputs(model)
    if input is not None:
        if input not in specs:
            raise DataError(f"the model has no input '{input}'", hint=f"its inputs are {list(specs)}")
        return input, specs[input]
    fit = [k for k, v in specs.items() if v.shape is not None and len(v.shape) in ranks]
    if len(fit) != 1:
        raise DataError(f"cannot tell which model input the {what} in {where} feed: "
                        f"{'several fit' if fit else 'none has a fitting rank'} ({fit or list(specs)})",
                        hint="name it: load_data(..., input=NAME) (CLI --data-input NAME)")
    return fit[0], specs[fit[0]]


def _finish(cols: dict[str, Any], model: onnx.ModelProto | None, target: str, where: Path, what: str,
            pre: Preprocessing | None, extra: Mapping[str, Any] | None) -> Dataset:
    cols = {**cols, **dict(extra or {})}
    if model is not None:
        others = [k for k in model_inputs(model) if k not in cols]
        if others:
            raise DataError(f"the {what} in {where} feed input '{target}', but the model also needs {others}",
                            hint="pass arrays for those inputs: load_data(folder, model, extra={...}), or give "
                                 "an .npz with every input")
    return Dataset(cols, {target: 0}, description=str(where), preprocessing=pre, given={target: 0})


def preprocessing_for(model: onnx.ModelProto | None, input: str | None = None, *, kind: str = "image",
                      **changes: Any) -> Preprocessing:
    """The preprocessing a model's input shape implies (layout, size, channels, dtype), with ``changes``
    (only the keys that are not None) applied; the CLI flags and the tabs' data boxes go through here."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if kind != "image":
        base = Preprocessing(kind=kind)
        info = None
        if model is not None:
            ranks = (1, 2, 3) if kind == "audio" else (1, 2)
            try:
                _, info = _target_input(model, input, ranks, f"{kind} files", Path("the data"))
            except DataError:
                info = None
        dtype = info.dtype if info is not None and info.dtype != "unknown" else (
            "float32" if kind == "audio" else "int64")
        return replace(base, dtype=dtype, **changes)
    info = None
    if model is not None:
        try:
            _, info = _target_input(model, input, (3, 4), "images", Path("the data"))
        except DataError:
            info = None
    fields: dict[str, Any] = {}
    if info is not None and info.shape is not None:
        dims = list(info.shape)[-3:]
        extra = 0 if changes.get("append_channel") is None else 1  # M-LSD: 4 channels, RGB + a constant one
        chans = (1 + extra, 3 + extra)
        if isinstance(dims[0], int) and dims[0] in chans and not (isinstance(dims[2], int) and dims[2] in chans):
            fields["layout"], c, hw = "NCHW", dims[0] - extra, dims[1:]
        elif isinstance(dims[2], int) and dims[2] in chans:
            fields["layout"], c, hw = "NHWC", dims[2] - extra, dims[:2]
        else:
            c, hw = None, []
        if c == 1:
            fields["channels"] = "GRAY"
        if hw and all(isinstance(d, int) and d > 0 for d in hw):
            fields["size"] = tuple(int(d) for d in hw)
        if info.dtype not in ("unknown", None):
            fields["dtype"] = info.dtype
            if np.dtype(info.dtype).kind in "iu":
                fields["scale"] = 1.0
    for key in ("size", "mean", "std", "crop_from"):
        if key in changes:
            changes[key] = tuple(changes[key])
    return Preprocessing(**{**fields, **changes})


def resize_image(image: Image.Image, pre: Preprocessing) -> Image.Image:
    """A Pillow image in ``pre``'s channels (L or RGB) and geometry: stretched to ``size``, letterboxed into it
    (aspect kept, ``pad`` around, top-left or ``center``-ed) or resized to ``crop_from`` and centre-cropped to
    ``size``, with the ``resample`` filter; the file's own size when ``size`` is empty."""
    from PIL import Image

    im = image.convert("L" if pre.channels == "GRAY" else "RGB")
    if not pre.size:
        return im
    h, w = pre.size
    method = getattr(Image.Resampling, pre.resample.upper())
    if pre.resize == "letterbox":
        r = min(h / im.height, w / im.width)
        nw, nh = max(1, round(im.width * r)), max(1, round(im.height * r))
        canvas = Image.new(im.mode, (w, h), (pre.pad,) * len(im.getbands()))
        canvas.paste(im.resize((nw, nh), method), ((w - nw) // 2, (h - nh) // 2) if pre.center else (0, 0))
        return canvas
    if pre.crop_from:
        ch, cw = pre.crop_from
        im = im.resize((cw, ch), method) if im.size != (cw, ch) else im
        top, left = (ch - h) // 2, (cw - w) // 2
        return im.crop((left, top, left + w, top + h))
    return im.resize((w, h), method) if im.size != (w, h) else im


def image_array(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """One Pillow image as one sample (no batch axis): :func:`resize_image`, channel order, ``scale``,
    ``mean``/``std``, ``append_channel``, ``layout`` and ``dtype`` (integers rounded and clipped)."""
    x = np.asarray(resize_image(image, pre), dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if pre.channels == "BGR":
        x = x[:, :, ::-1]
    x = x * np.float32(pre.scale)
    c = x.shape[2]
    for key in ("mean", "std"):
        v = getattr(pre, key)
        if v and len(v) not in (1, c):
            raise DataError(f"preprocessing {key} {list(v)} has {len(v)} values for {c} channel(s)",
                            hint=f"give 1 or {c} values")
    if pre.mean:
        x = x - np.asarray(pre.mean, np.float32)
    if pre.std:
        x = x / np.asarray(pre.std, np.float32)
    if pre.append_channel is not None:  # a constant extra channel after the normalisation (M-LSD: RGB + 1.0)
        x = np.concatenate([x, np.full((*x.shape[:2], 1), pre.append_channel, np.float32)], axis=2)
    if pre.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    dtype = np.dtype(pre.dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return np.ascontiguousarray(x.astype(dtype))


def _image(path: Path, pre: Preprocessing) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return image_array(im, pre)
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc}", hint="remove the file or convert it to PNG/JPEG") from exc


def _images(files: list[Path], where: Path, model: onnx.ModelProto | None, pre: Preprocessing | None,
            input: str | None, extra: Mapping[str, Any] | None) -> Dataset:
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise DataError("reading images needs Pillow", hint="pip install pillow") from exc
    target, info = _target_input(model, input, (3, 4), "images", where)
    pre = pre if pre is not None else preprocessing_for(model, target)
    load: Callable[[Path], np.ndarray] = lambda p: _image(p, pre)  # noqa: E731
    if info is not None and info.shape is not None and len(info.shape) == 3:  # [N, H, W]: one grey channel
        if pre.channels != "GRAY":
            raise DataError(f"the model's input '{target}' has rank 3 ({list(info.shape)}): images for it must be "
                            "grey (one channel, no channel axis)", hint="use channels GRAY (CLI --channels GRAY)")
        axis = 0 if pre.layout == "NCHW" else -1
        load = lambda p: np.squeeze(_image(p, pre), axis=axis)  # noqa: E731
    first = load(files[0])
    col = _Files(files, load, first.shape, first.dtype)
    return _finish({target: col}, model, target, where, "images", pre, extra)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise DataError(f"cannot read {path} as a PCM .wav file: {exc}",
                        hint="convert it to 8/16/32-bit PCM WAV (e.g. ffmpeg -i in -acodec pcm_s16le out.wav)") from exc
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise DataError(f"{path}: {8 * width}-bit samples are not supported", hint="convert it to 16-bit PCM WAV")
    return x.reshape(-1, channels).mean(axis=1), rate


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear interpolation (simple; good enough for calibration and comparison data)."""
    if rate == target or x.size == 0:
        return x
    n = int(round(x.size * target / rate))
    return np.interp(np.arange(n) * (rate / target), np.arange(x.size), x).astype(np.float32)


def _audio(files: list[Path], where: Path, model: onnx.ModelProto | None, pre: Preprocessing | None,
           input: str | None, extra: Mapping[str, Any] | None) -> Dataset:
    target, info = _target_input(model, input, (1, 2), "audio files", where)
    pre = pre if pre is not None else preprocessing_for(model, target, kind="audio")
    if pre.kind != "audio":
        pre = replace(pre, kind="audio")
    chunk = pre.chunk
    if not chunk and info is not None and info.shape and isinstance(info.shape[-1], int) and info.shape[-1] > 0:
        chunk = int(info.shape[-1])
    clips = []
    rates = set()
    for f in files:
        x, rate = _read_wav(f)
        rates.add(rate)
        clips.append(_resample(x, rate, pre.sample_rate) if pre.sample_rate else x)
    if not pre.sample_rate:
        if len(rates) > 1:
            raise DataError(f"the .wav files in {where} have different sample rates {sorted(rates)}",
                            hint="give a sample_rate to resample them to (CLI --sample-rate 16000)")
        pre = replace(pre, sample_rate=rates.pop())
    pre = replace(pre, chunk=chunk)
    if chunk:
        rows = [c[: (c.size // chunk) * chunk].reshape(-1, chunk) for c in clips]
        samples = np.concatenate(rows) if rows else np.zeros((0, chunk), np.float32)
        if not len(samples):
            raise DataError(f"the audio in {where} is shorter than one chunk of {chunk} samples",
                            hint="use longer recordings or a smaller chunk")
    else:
        n = min(c.size for c in clips)
        if len({c.size for c in clips}) > 1:
            raise DataError(f"the .wav files in {where} have different lengths and no chunk size is set",
                            hint="give a chunk size (preprocessing chunk=..., CLI --chunk 512)")
        samples = np.stack([c[:n] for c in clips])
    return _finish({target: samples.astype(np.dtype(pre.dtype))}, model, target, where, "audio files", pre, extra)


def _npy_files(files: list[Path], where: Path, model: onnx.ModelProto | None, input: str | None,
               extra: Mapping[str, Any] | None, one_file: bool = False) -> Dataset:
    specs = model_inputs(model) if model is not None else {}
    target = input or (next(iter(specs)) if len(specs) == 1 else None)
    if target is None and specs:
        raise DataError(f"cannot tell which model input the .npy files in {where} feed (inputs {list(specs)})",
                        hint="name it: load_data(..., input=NAME) (CLI --data-input NAME), or give an .npz")
    target = target or "input"
    try:
        first = np.load(files[0], allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {files[0]} as .npy: {exc}", hint="save it with numpy.save") from exc
    if one_file:
        return _finish({target: first}, model, target, where, ".npy file", None, extra)
    col = _Files(files, lambda p: np.load(p, allow_pickle=False), tuple(first.shape), first.dtype)
    return _finish({target: col}, model, target, where, ".npy files", None, extra)


def _tokens(path: Path, model: onnx.ModelProto | None, pre: Preprocessing | None, input: str | None,
            extra: Mapping[str, Any] | None) -> Dataset:
    """One sequence of integer ids per line (spaces or commas); padded with 0 / cut to ``length``. A model
    input named ``attention_mask`` gets 1 over the ids, ``token_type_ids`` zeros (Hugging Face's names)."""
    specs = model_inputs(model) if model is not None else {}
    target = input or ("input_ids" if "input_ids" in specs else None)
    if target is None:
        target, _ = _target_input(model, None, (1, 2), "token ids", path)
    pre = pre if pre is not None else preprocessing_for(model, target, kind="tokens")
    if pre.kind != "tokens":
        pre = replace(pre, kind="tokens")
    seqs = []
    for k, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            seqs.append([int(t) for t in line.replace(",", " ").split()])
        except ValueError as exc:
            raise DataError(f"{path} line {k + 1} is not integer token ids: {line[:60]!r}",
                            hint="one sequence per line, ids separated by spaces or commas") from exc
    if not seqs:
        raise DataError(f"{path} holds no token sequences", hint="one sequence of ids per line")
    length = pre.length
    info = specs.get(target)
    if not length and info is not None and info.shape and isinstance(info.shape[-1], int) and info.shape[-1] > 0:
        length = int(info.shape[-1])
    length = length or max(len(s) for s in seqs)
    pre = replace(pre, length=length)
    ids = np.zeros((len(seqs), length), np.dtype(pre.dtype))
    mask = np.zeros((len(seqs), length), np.dtype(pre.dtype))
    for i, s in enumerate(seqs):
        s = s[:length]
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    cols: dict[str, Any] = {target: ids}
    for name, value in (("attention_mask", mask), ("token_type_ids", np.zeros_like(ids))):
        if name in specs and name not in dict(extra or {}):
            dt = specs[name].dtype
            cols[name] = value.astype(np.dtype(dt)) if dt != "unknown" else value
    return _finish(cols, model, target, path, "token ids", pre, extra)


# --- made-up data --------------------------------------------------------------------------------------


def random_data(model: onnx.ModelProto, *, samples: int = 100, shapes: Mapping[str, Sequence[int]] | None = None,
                seed: int = 0, warn: bool = True, run_length: int | None = None) -> Dataset:
    """Seeded standard-normal data (zeros for integer inputs) for every input, ``samples`` of them.

    Each input's sample axis is inferred from its declared shape as for real data; the other dims come from
    the declared shape or ``shapes`` (a whole shape per input, whose sample axis is then replaced): an unknown
    dim is never guessed, it is a :class:`DataError` asking for ``shapes``. ``warn``: say loudly that scales
    from random data fit no real input (calibration); timing does not care. ``run_length`` as for
    :func:`load_data`; where the sample axis has a sequence/time name and none is given, the made-up data is
    one sequence (one run of all its entries, said in its description).
    """
    if warn:
        msg = ("calibrating with RANDOM data: the scales will not match real inputs and accuracy will suffer; "
               "use 100-500 representative samples")
        _warnings.warn(msg, UserWarning, stacklevel=2)
    rng = np.random.default_rng(seed)
    specs = model_inputs(model)
    shapes = dict(shapes or {})
    unknown = [k for k in shapes if k not in specs]
    if unknown:
        raise DataError(f"shapes given for {unknown}, which are not model inputs", hint=f"the inputs are {list(specs)}")
    declared = {k: v.shape for k, v in specs.items()}
    # a placeholder shape per input (dynamic dims 1) only to infer the sample axes, then the real shapes
    probe = {k: (tuple(shapes[k]) if k in shapes else tuple(_fixed(d) or 1 for d in (dims or ())))
             for k, dims in declared.items()}
    for k, dims in declared.items():
        if dims is None and k not in shapes:
            raise DataError(f"input '{k}' has no declared shape", hint=f"give it: --shapes {k}:1x3x224x224")
    axes = _infer_axes(probe, declared, {}, "the model's inputs")
    if all(a is None for a in axes.values()):  # every dim fixed: samples stack on the (fixed) batch axis 0
        axes = {k: (0 if probe[k] else None) for k in axes}
    arrays = {}
    for k, dims in declared.items():
        ax = axes[k]
        if k in shapes:
            shape = [int(d) for d in shapes[k]]
        else:
            assert dims is not None  # an input with no declared shape and none given was refused above
            bad = [i for i, d in enumerate(dims) if _dynamic(d) and i != ax]
            if bad:
                example = "x".join(str(d) if not _dynamic(d) else ("1" if i == ax else "?") for i, d in enumerate(dims))
                raise DataError(f"input '{k}' has dynamic dim(s) {[dims[i] for i in bad]} (axes {bad}, declared shape "
                                f"{list(dims)}): made-up data would have to guess their size",
                                hint=f"give real data (--inputs DATA) or the shape: --shapes {k}:{example} with "
                                     "each ? replaced by a size")
            shape = [_fixed(d) or 1 for d in dims]
        if ax is not None and k not in shapes:  # a shape given in full is used as it is
            shape[ax] = samples if (dims is None or _dynamic(dims[ax])) else shape[ax] * max(1, samples // shape[ax])
        dtype = np.dtype(specs[k].dtype) if specs[k].dtype != "unknown" else np.dtype(np.float32)
        arrays[k] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    description = "random data"
    if run_length is None:  # the first sequence-named sample axis: the made-up data is one sequence
        for k, a in axes.items():
            decl = declared[k]
            if a is not None and decl is not None and len(decl) == arrays[k].ndim and _sequence_named(decl[a]):
                run_length = int(arrays[k].shape[a])
                description = f"random data (one sequence of {run_length} on '{decl[a]}' of '{k}')"
                break
    return Dataset(arrays, axes, description=description, given=axes).bind(model, axes, run_length)


def timing_feeds(model: onnx.ModelProto, data: DataSource | None = None, *, batch: int = 1,
                 shapes: Mapping[str, Sequence[int]] | None = None, sample_axes: Axes | None = None,
                 preprocessing: Preprocessing | None = None, run_length: int | None = None) -> dict[str, np.ndarray]:
    """Feeds to time ``model`` with: the first batch of ``data`` (anything :func:`load_data` reads): ``batch``
    samples, or its first run where it has a run length; else seeded random data whose shapes come from the model
    and ``shapes`` (never a guessed 1 for an unknown dim); the sample axis gets ``batch`` (``run_length`` where
    given). Timing depends on the shapes only."""
    if data is not None:
        if shapes:
            raise DataError("give either input data or --shapes for profiling, not both",
                            hint="the data's own shapes are the ones timed")
        ds = load_data(data, model, sample_axes=sample_axes, preprocessing=preprocessing, run_length=run_length)
        first = next(ds.batches(batch, warnings=[]), None)
        if first is None:
            raise DataError(f"{ds.description} holds no samples to time the model with", hint="give one sample")
        return first.feeds
    fixed = {k: list(v) for k, v in (shapes or {}).items()}
    ds = random_data(model, samples=run_length or batch, shapes=fixed, warn=False, run_length=run_length)
    return ds.batch(0, ds.samples).feeds


def find_data(model: onnx.ModelProto, folder: str | os.PathLike[str] | None) -> list[Path]:
    """``.npz`` files in ``folder`` that fit the model's inputs (names, ranks, fixed dims), ``calib`` first."""
    if folder is None or not Path(folder).is_dir():
        return []
    specs = model_inputs(model)
    found = []
    for path in sorted(Path(folder).glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                if not all(k in z.files for k in specs):
                    continue
                shapes = {k: z[k].shape for k in specs}
        except Exception:  # an unreadable file simply does not fit
            continue
        ok = True
        for k, info in specs.items():
            dims = info.shape
            if dims is None:
                continue
            off = [(d, s) for d, s in zip(dims, shapes[k]) if not _dynamic(d) and d != s]
            ok = ok and len(shapes[k]) == len(dims) and (not off or (len(off) == 1 and off[0][1] % off[0][0] == 0)
                                                         or _uneven_fixed_batch(dims, shapes[k]))
        if ok:
            found.append(path)
    return sorted(found, key=lambda p: ("calib" not in p.name, p.name))


# --- outputs -----------------------------------------------------------------------------------------


def output_sample_axes(model: onnx.ModelProto, data: Dataset) -> dict[str, int | None]:
    """Each graph output's sample axis: the declared dim sharing the symbol of an input's sample axis, else
    the one dynamic dim when there is one, else 0 (None for a 0-d output). Metrics read outputs samples-first."""
    infos = tensor_infos(model)
    specs = model_inputs(model)
    symbols: set[str] = set()
    for k, a in data.sample_axes.items():
        shape = specs[k].shape if k in specs else None
        dim = shape[a] if a is not None and shape is not None else None
        if isinstance(dim, str):
            symbols.add(dim)
    out: dict[str, int | None] = {}
    for o in model.graph.output:
        info = infos.get(o.name)
        dims = info.shape if info is not None else None
        if dims is not None and len(dims) == 0:
            out[o.name] = None
            continue
        if dims is None:
            out[o.name] = 0
            continue
        named = [i for i, d in enumerate(dims) if isinstance(d, str) and d in symbols]
        dyn = [i for i, d in enumerate(dims) if _dynamic(d)]
        out[o.name] = named[0] if len(named) == 1 else dyn[0] if len(dyn) == 1 else 0
    return out


def samples_first(values: Mapping[str, np.ndarray], axes: Mapping[str, int | None]) -> dict[str, np.ndarray]:
    """Outputs with their sample axis moved to the front (views), for per-sample metrics."""
    out = {}
    for k, v in values.items():
        axis = axes.get(k)
        out[k] = np.moveaxis(v, axis, 0) if axis is not None and axis != 0 and v.ndim > axis else v
    return out
