"""A corpus model's inputs as arrays, read by :mod:`corpus.data` (its real data where the manifest names some, else
seeded random data of the manifest's shapes), with each input's sample axis and the model's fixed batch. Used by the
corpus suite.

Arrays are keyed by input name with the samples on each input's ``sample_axis`` (a fixed input, axis None,
is one array every sample shares). A sequence model's sample is ``run_length`` consecutive entries of that axis (the
manifest's ``data.preprocess.frames_per_sample``: Silero VAD's sequence exports take 32 frames per run), each one
model run. :func:`as_workbench_data` hands them to the workbench through its data layer (``workbench.data``), with
that run length, so the workbench runs the model on exactly the runs the suite runs it on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Inputs", "load_inputs", "one_sample", "as_workbench_data", "batch_of", "model_file"]


@dataclass
class Inputs:
    """Arrays keyed by input name, each input's sample axis (None: fixed), the sample count, where they came from."""

    arrays: dict[str, np.ndarray]
    axes: dict[str, int | None]
    samples: int
    source: str
    real: bool = False
    notes: list[str] = field(default_factory=list)
    run_length: int = 1  # entries of the sample axis per sample, each one model run (a sequence model's frames)

    @property
    def step(self) -> int:
        """Entries of the sample axis per model run: the run length of a sequence model, else the model's fixed size
        on the sample axis (1 when dynamic)."""
        return self.run_length if self.run_length > 1 else max(1, int(getattr(self, "_step", 1)))

    @property
    def rows(self) -> int:
        """Entries of the sample axis that the samples span."""
        return self.samples * self.run_length

    def runs(self) -> list[dict[str, np.ndarray]]:
        """Feeds of every model run, ``step`` entries each (a last partial run is left out)."""
        return [batch_of(self, i, i + self.step) for i in range(0, self.rows - self.step + 1, self.step)]

    def take(self, n: int) -> Inputs:
        """The first ``n`` samples (whole runs of a sequence model)."""
        n = min(n, self.samples)
        arrays = {k: (v if self.axes[k] is None else np.take(v, np.arange(n * self.run_length), axis=self.axes[k]))
                  for k, v in self.arrays.items()}
        out = Inputs(arrays, dict(self.axes), n, self.source, self.real, list(self.notes), self.run_length)
        out._step = getattr(self, "_step", 1)  # type: ignore[attr-defined]
        return out


def model_file(manifest: Mapping[str, Any]) -> Path:
    """The model file of a manifest: ``corpus.fetch.model_path`` (fetched on first use)."""
    from corpus import fetch as F

    return Path(F.fetch(manifest["id"]))


def load_inputs(manifest: Mapping[str, Any], *, samples: int = 8) -> Inputs:
    """``samples`` samples of every input of ``manifest`` (fewer where the data holds fewer), read by
    :func:`corpus.data.samples`, the one reader of a manifest's data (images, streamed audio with its context and
    recurrent state, openWakeWord's front end, tokens, bytes, .npz), stacked on each input's sample axis."""
    from corpus import data as D

    specs: Mapping[str, Mapping[str, Any]] = manifest["inputs"]
    axes = {k: s.get("sample_axis", 0) for k, s in specs.items()}
    got = D.samples(manifest["id"], samples)
    arrays = {k: (got[0][k] if axes[k] is None else np.concatenate([g[k] for g in got], axis=axes[k]))
              for k in specs}
    data = manifest.get("data") or {}
    kind = data.get("kind")
    # a model with a fixed batch gets whole runs per sample (the manifest's shape holds the batch): count rows;
    # a sequence model's sample is frames_per_sample consecutive frames, one run each: count those
    run = int((data.get("preprocess") or {}).get("frames_per_sample") or 1)
    rows = min((v.shape[axes[k]] for k, v in arrays.items() if axes[k] is not None), default=len(got) * run)
    out = Inputs(arrays, axes, int(rows) // run, f"{kind} data" if kind else "random", bool(kind), run_length=run)
    out._step = _fixed_step(specs, axes)  # type: ignore[attr-defined]
    return out


def _fixed_step(specs: Mapping[str, Mapping[str, Any]], axes: Mapping[str, int | None]) -> int:
    for k, s in specs.items():
        ax, shape = axes[k], s.get("declared") or s.get("shape", [])  # the model's own dims decide a fixed batch
        if ax is not None and ax < len(shape) and isinstance(shape[ax], int) and shape[ax] > 1:
            return int(shape[ax])
    return 1


def one_sample(inputs: Inputs, i: int = 0) -> dict[str, np.ndarray]:
    """The feeds of sample ``i`` alone (each input shaped as the model declares it; a sequence model's run)."""
    return batch_of(inputs, i * inputs.run_length, (i + 1) * inputs.run_length)


def batch_of(inputs: Inputs, start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: (v if inputs.axes[k] is None else np.take(v, np.arange(start, stop), axis=inputs.axes[k]))
            for k, v in inputs.arrays.items()}


def as_workbench_data(inputs: Inputs) -> Any:
    """What the workbench's calibration, compare, debug and profile take: the arrays when every input has its
    samples on axis 0 and a sample is one entry (every loader reads that), else the data layer's Dataset with the
    sample axes and the run length given (``workbench.data``; ``--sample-axis``, ``--run-length``), as a user who
    knows them would pass it: a sequence model then runs on exactly the suite's runs."""
    if all(a == 0 for a in inputs.axes.values()) and inputs.run_length == 1:
        return dict(inputs.arrays)
    from workbench.data import Dataset

    return Dataset(dict(inputs.arrays), sample_axes=dict(inputs.axes), description=f"corpus data ({inputs.source})",
                   run_length=inputs.run_length if inputs.run_length > 1 else None)
