"""A corpus model's inputs as arrays: its real data (images, audio, tokens, .npz) where the manifest names some,
else seeded random data of the manifest's shapes. Used by the corpus suite and ``benchmarks/bench_corpus.py``.

Arrays are keyed by input name with the samples on each input's ``sample_axis`` (a fixed input, axis None,
is one array every sample shares). :func:`as_workbench_data` hands them to the workbench through its data
layer (``workbench.data``) when that exists, else as a plain dict (samples on axis 0).
"""

from __future__ import annotations

import io
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Inputs", "load_inputs", "one_sample", "as_workbench_data", "batch_of", "model_file"]

_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "int64": np.int64,
           "int32": np.int32, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


@dataclass
class Inputs:
    """Arrays keyed by input name, each input's sample axis (None: fixed), the sample count, where they came from."""

    arrays: dict[str, np.ndarray]
    axes: dict[str, int | None]
    samples: int
    source: str
    real: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def step(self) -> int:
        """Samples per model run: the model's fixed size on the sample axis (1 when dynamic)."""
        return max(1, int(getattr(self, "_step", 1)))

    def runs(self) -> list[dict[str, np.ndarray]]:
        """Feeds of every model run, ``step`` samples each (a last partial run is left out)."""
        return [batch_of(self, i, i + self.step) for i in range(0, self.samples - self.step + 1, self.step)]

    def take(self, n: int) -> Inputs:
        """The first ``n`` samples."""
        n = min(n, self.samples)
        arrays = {k: (v if self.axes[k] is None else np.take(v, np.arange(n), axis=self.axes[k]))
                  for k, v in self.arrays.items()}
        out = Inputs(arrays, dict(self.axes), n, self.source, self.real, list(self.notes))
        out._step = self.step  # type: ignore[attr-defined]
        return out


def model_file(manifest: Mapping[str, Any]) -> Path:
    """The model file of a manifest: ``corpus.fetch.model_path`` (fetched on first use)."""
    from corpus import fetch as F

    return Path(F.fetch(manifest["id"]))


def _data_files(manifest: Mapping[str, Any]) -> list[Path]:
    from corpus import fetch as F

    if hasattr(F, "data_files"):
        return [p for p in F.data_files(manifest["id"]) if Path(p).is_file()]
    root = Path(F.data_dir(manifest["id"]))
    members = (manifest.get("data") or {}).get("source", {}).get("members") or []
    files = [root / m for m in members if (root / m).is_file()]
    if not files:  # the fetcher may flatten the member paths
        files = [root / Path(m).name for m in members if (root / Path(m).name).is_file()]
    if not files and root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
    return files


def _image(path: Path, pre: Mapping[str, Any], variant: int) -> np.ndarray:
    from PIL import Image, ImageOps

    img = Image.open(path).convert("RGB")
    if variant % 2:
        img = ImageOps.mirror(img)
    if variant >= 2:  # a different centre crop per variant, so repeated images are distinct samples
        w, h = img.size
        f = 1.0 - 0.08 * (variant // 2)
        cw, ch = max(8, int(w * f)), max(8, int(h * f))
        img = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    size = pre.get("size")
    if size:
        img = img.resize((int(size[1]), int(size[0])), Image.BILINEAR)  # size is [H, W]
    x = np.asarray(img, dtype=np.float32)
    if str(pre.get("channels", "RGB")).upper() == "BGR":
        x = x[..., ::-1]
    if pre.get("gray") or str(pre.get("channels", "RGB")).upper() == "GRAY":
        x = x.mean(axis=2, keepdims=True)
    x = x * float(pre.get("scale", 1.0))
    if pre.get("mean") is not None:
        x = x - np.asarray(pre["mean"], dtype=np.float32)
    if pre.get("std") is not None:
        x = x / np.asarray(pre["std"], dtype=np.float32)
    if pre.get("append_channel") is not None:  # e.g. an alpha channel the model expects constant
        x = np.concatenate([x, np.full(x.shape[:2] + (1,), float(pre["append_channel"]), np.float32)], axis=2)
    if str(pre.get("layout", "NCHW")).upper() == "NCHW":
        x = x.transpose(2, 0, 1)
    return x.astype(_DTYPES.get(pre.get("dtype", "float32"), np.float32))


def _audio(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(path.read_bytes())) as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    x = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    if width == 1:
        x = x - 128.0
    x = x / float(np.iinfo(dtype).max if width > 1 else 128)
    return x.reshape(-1, channels).mean(axis=1), rate


def _spec_shape(spec: Mapping[str, Any]) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else 1 for d in spec.get("shape", [])]


def _random(spec: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """One sample (size 1 on the sample axis) of seeded random data, or the fixed input's value."""
    shape, dtype = _spec_shape(spec), _DTYPES.get(spec.get("dtype", "float32"), np.float32)
    axis = spec.get("sample_axis", 0)
    if axis is not None and axis < len(shape):
        shape[axis] = 1
    if "value" in spec:
        return np.full(shape, spec["value"], dtype=dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return np.ones(shape, dtype=dtype)
    high = int(spec.get("high", 100))
    return rng.integers(0, high, size=shape).astype(dtype)


def _per_sample(spec: Mapping[str, Any], axis: int | None, x: np.ndarray) -> np.ndarray:
    """One sample shaped like the manifest's input (sample axis of size 1)."""
    shape = _spec_shape(spec)
    if axis is None or x.shape == tuple(shape):
        return x.reshape(shape) if x.size == int(np.prod(shape)) else x
    return np.expand_dims(x, axis) if x.ndim == len(shape) - 1 else x


def load_inputs(manifest: Mapping[str, Any], *, samples: int = 8, seed: int = 0) -> Inputs:
    """``samples`` samples of every input of ``manifest`` (real data for the input the data feeds)."""
    rng = np.random.default_rng(seed)
    specs: Mapping[str, Mapping[str, Any]] = manifest["inputs"]
    axes = {k: s.get("sample_axis", 0) for k, s in specs.items()}
    data = manifest.get("data") or None
    per: dict[str, list[np.ndarray]] = {k: [] for k in specs}
    real, source, notes = False, "random", []
    fed: str | None = None
    if data:
        fed = data.get("input") or next(iter(specs))
        kind, pre = data.get("kind"), data.get("preprocess") or {}
        files = _data_files(manifest)
        if not files:
            notes.append(f"no data files found for {manifest['id']}: random data instead")
            fed = None
        elif kind == "image":
            files = [f for f in files if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp")]
            for i in range(samples):
                per[fed].append(_per_sample(specs[fed], axes[fed], _image(files[i % len(files)], pre, i // len(files))))
            real, source = True, f"{len(files)} images"
        elif kind == "audio":
            chunk = int(pre.get("chunk", 512))
            waves = [_audio(f)[0] for f in files if f.suffix.lower() == ".wav"]
            signal = np.concatenate(waves) if waves else np.zeros(chunk * samples, np.float32)
            step = max(chunk, (len(signal) - chunk) // max(1, samples))
            for i in range(samples):
                start = (i * step) % max(1, len(signal) - chunk)
                per[fed].append(_per_sample(specs[fed], axes[fed], signal[start:start + chunk].astype(np.float32)))
            real, source = bool(waves), f"{len(waves)} wav files"
        elif kind == "npz":
            with np.load(files[0], allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k in specs}
            n = min(samples, min(v.shape[axes[k] or 0] for k, v in arrays.items() if axes[k] is not None))
            out = {k: (v if axes[k] is None else np.take(v, np.arange(n), axis=axes[k])) for k, v in arrays.items()}
            for k, s in specs.items():
                if k not in out:
                    out[k] = _random(s, rng) if axes[k] is None else np.concatenate(
                        [_random(s, rng) for _ in range(n)], axis=axes[k])
            return Inputs(out, axes, n, files[0].name, True, notes)
        else:  # tokens and others: random ids in the manifest's range (a tokenizer is the data layer's job)
            notes.append(f"data kind '{kind}' is not read here: random data instead")
            fed = None
    for k, s in specs.items():
        if k == fed and per[k]:
            continue
        if axes[k] is None:
            continue
        per[k] = [_random(s, rng) for _ in range(samples)]
    arrays = {}
    for k, s in specs.items():
        if axes[k] is None:
            arrays[k] = _random(s, rng)
        else:
            arrays[k] = np.concatenate(per[k], axis=axes[k])
    out = Inputs(arrays, axes, samples, source, real, notes)
    out._step = _fixed_step(specs, axes)  # type: ignore[attr-defined]
    return out


def _fixed_step(specs: Mapping[str, Mapping[str, Any]], axes: Mapping[str, int | None]) -> int:
    for k, s in specs.items():
        ax, shape = axes[k], s.get("declared") or s.get("shape", [])  # the model's own dims decide a fixed batch
        if ax is not None and ax < len(shape) and isinstance(shape[ax], int) and shape[ax] > 1:
            return int(shape[ax])
    return 1


def one_sample(inputs: Inputs, i: int = 0) -> dict[str, np.ndarray]:
    """The feeds of sample ``i`` alone (each input shaped as the model declares it)."""
    return {k: (v if inputs.axes[k] is None else np.take(v, [i], axis=inputs.axes[k]))
            for k, v in inputs.arrays.items()}


def batch_of(inputs: Inputs, start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: (v if inputs.axes[k] is None else np.take(v, np.arange(start, stop), axis=inputs.axes[k]))
            for k, v in inputs.arrays.items()}


def as_workbench_data(inputs: Inputs) -> Any:
    """What the workbench's calibration, compare, debug and profile take: the arrays when every input has its
    samples on axis 0 (every loader reads that), else the data layer's Dataset with the sample axes given
    (``workbench.data``), as a user who knows them would pass it."""
    if all(a == 0 for a in inputs.axes.values()):
        return dict(inputs.arrays)
    try:
        from workbench.data import Dataset
    except ImportError:
        return dict(inputs.arrays)
    return Dataset(dict(inputs.arrays), sample_axes=dict(inputs.axes), description=f"corpus data ({inputs.source})")
