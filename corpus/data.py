"""Turn a corpus model's fetched data files into model inputs, with the preprocessing its own package applies.

``samples(id, count)`` gives a list of feeds (one per sample, each input at the manifest's per-sample shape);
``sample_feeds(id, count)`` stacks them along each input's ``sample_axis`` (inputs with ``sample_axis`` null are
fixed: given once, from the manifest's ``value`` or zeros). ``save_npz(id, count, path)`` writes the stacked feeds.

The manifest's ``data.preprocess`` says how, per ``data.kind``:

- ``image``: ``size`` [H, W], ``resize`` (``stretch`` or ``letterbox`` with ``pad``), ``channels`` RGB/BGR/GRAY,
  ``scale``, ``mean``, ``std`` (per channel, in the model's channel order), ``layout`` NCHW/NHWC. More samples than
  images are made from the same images by crops (quarters, then halves) so every sample is a real photo region.
- ``audio``: 16-bit PCM wav at ``sample_rate``, cut into ``chunk`` samples, each prefixed with the ``context``
  samples before it (Silero VAD v5's wrapper does that), times ``scale`` (openWakeWord feeds int16-valued floats).
  ``stream`` maps each recurrent state input to the output that carries it: the FP32 model runs over the wav chunk
  by chunk from zero state, and each sample records the chunk with the state the model had when it arrived, as a
  streaming user would feed it. ``via`` names a front end (another corpus model and how its output becomes this
  model's input), e.g. openWakeWord's melspectrogram -> embedding -> wake word classifier.
- ``bytes``: Magika's features: the first ``beg_size`` and last ``end_size`` bytes of each file (whitespace stripped),
  padded with ``padding_token``, as int32.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import numpy as np

from corpus.fetch import CorpusError, data_files, fetch, load_manifest, model_path

__all__ = ["samples", "sample_feeds", "save_npz", "read_wav", "image_samples"]

_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "uint8": np.uint8,
           "bool": np.bool_, "float64": np.float64}


def samples(model_id: str, count: int = 8) -> list[dict[str, np.ndarray]]:
    """``count`` real samples for ``model_id`` (fewer if the data holds fewer), each a feed at the per-sample shape."""
    manifest = load_manifest(model_id)
    fetch(model_id)
    data = manifest.get("data")
    inputs = manifest["inputs"]
    if not data:
        rng = np.random.default_rng(0)
        return [{n: _fixed(spec, rng) for n, spec in inputs.items()} for _ in range(count)]
    kind = data["kind"]
    pre = data.get("preprocess") or {}
    files = data_files(model_id)
    if kind == "image":
        main = image_samples(files, pre, count)
    elif kind == "audio":
        return _audio_samples(model_id, manifest, files, count)
    elif kind == "bytes":
        main = _byte_samples(files, pre, count)
    elif kind == "npz":
        with np.load(files[0]) as z:
            return [{n: z[n][i] if inputs[n].get("sample_axis") is not None else z[n] for n in inputs}
                    for i in range(min(count, len(z[data["input"]])))]
    else:
        raise CorpusError(f"manifest '{model_id}': data.kind '{kind}' is not image, audio, bytes or npz",
                          hint="see corpus/README.md")
    rng = np.random.default_rng(0)
    out = []
    for x in main:
        feed = {n: _fixed(spec, rng) for n, spec in inputs.items() if n != data["input"]}
        feed[data["input"]] = x
        out.append(feed)
    return out


def sample_feeds(model_id: str, count: int = 8) -> dict[str, np.ndarray]:
    """The samples stacked along each input's ``sample_axis``; fixed inputs (``sample_axis`` null) once."""
    inputs = load_manifest(model_id)["inputs"]
    got = samples(model_id, count)
    feeds = {}
    for name, spec in inputs.items():
        axis = spec.get("sample_axis")
        feeds[name] = got[0][name] if axis is None else np.concatenate([s[name] for s in got], axis=axis)
    return feeds


def save_npz(model_id: str, count: int, path: str | Path) -> Path:
    """Write :func:`sample_feeds` to ``path`` as an .npz (one array per input) and return the path."""
    from workbench.fsio import atomic_write

    buf = io.BytesIO()
    np.savez(buf, **sample_feeds(model_id, count))
    return atomic_write(path, buf.getvalue())


def _fixed(spec: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    dtype = _DTYPES[spec["dtype"]]
    if "value" in spec:
        return np.asarray(spec["value"], dtype=dtype).reshape(spec["shape"])
    if spec.get("sample_axis") is None or spec.get("zeros"):
        return np.zeros(spec["shape"], dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(spec["shape"]).astype(dtype)
    return rng.integers(0, 2, spec["shape"]).astype(dtype)


# ---------------------------------------------------------------- images


def image_samples(files: list[Path], pre: dict[str, Any], count: int) -> list[np.ndarray]:
    """Preprocessed images, one batch-1 array each; crops of the same images when ``count`` exceeds the files."""
    from PIL import Image

    images = [Image.open(f) for f in files]
    views = []
    for img in images:
        views.append(img)
    crops: list[Any] = []
    for frac in ((0, 0, 0.5, 0.5), (0.5, 0, 1, 0.5), (0, 0.5, 0.5, 1), (0.5, 0.5, 1, 1),
                 (0, 0, 1, 0.5), (0, 0.5, 1, 1), (0, 0, 0.5, 1), (0.5, 0, 1, 1)):
        for img in images:
            w, h = img.size
            crops.append(img.crop((int(frac[0] * w), int(frac[1] * h), int(frac[2] * w), int(frac[3] * h))))
    return [_preprocess_image(v, pre) for v in (views + crops)[:count]]


def _preprocess_image(img: Any, pre: dict[str, Any]) -> np.ndarray:
    from PIL import Image

    channels = pre.get("channels", "RGB")
    img = img.convert("L" if channels == "GRAY" else "RGB")
    h, w = pre["size"]
    if pre.get("resize", "stretch") == "letterbox":
        r = min(h / img.height, w / img.width)
        nw, nh = max(1, round(img.width * r)), max(1, round(img.height * r))
        canvas = Image.new(img.mode, (w, h), (pre.get("pad", 114),) * (1 if img.mode == "L" else 3))
        canvas.paste(img.resize((nw, nh), Image.BILINEAR), (0, 0))
        img = canvas
    else:
        img = img.resize((w, h), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if channels == "BGR":
        x = x[:, :, ::-1]
    x = x * float(pre.get("scale", 1.0))
    if "mean" in pre:
        x = x - np.asarray(pre["mean"], np.float32)
    if "std" in pre:
        x = x / np.asarray(pre["std"], np.float32)
    if pre.get("layout", "NCHW") == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=_DTYPES[pre.get("dtype", "float32")])


# ---------------------------------------------------------------- bytes (Magika)


def _byte_samples(files: list[Path], pre: dict[str, Any], count: int) -> list[np.ndarray]:
    beg, end, pad = int(pre["beg_size"]), int(pre["end_size"]), int(pre["padding_token"])
    out = []
    for f in files[:count]:
        content = f.read_bytes()
        head = content[: max(beg, 4096)].lstrip()[:beg]
        tail = content[-max(end, 4096):].rstrip()[-end:] if end else b""
        row = list(head) + [pad] * (beg - len(head)) + [pad] * (end - len(tail)) + list(tail)
        out.append(np.asarray([row], dtype=np.int32))
    return out


# ---------------------------------------------------------------- audio


def read_wav(path: str | Path, sample_rate: int) -> np.ndarray:
    """A mono 16-bit PCM wav as float32 in [-1, 1], checked to be at ``sample_rate``."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise CorpusError(f"{path}: {8 * w.getsampwidth()}-bit audio, not 16-bit PCM", hint="use a 16-bit PCM wav")
        if w.getframerate() != sample_rate:
            raise CorpusError(f"{path}: {w.getframerate()} Hz, the model wants {sample_rate} Hz",
                              hint="pick a wav at the model's sample rate")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
    return pcm[:, 0].astype(np.float32) / 32768.0


def _chunks(wav: np.ndarray, pre: dict[str, Any]) -> list[np.ndarray]:
    chunk, ctx = int(pre["chunk"]), int(pre.get("context", 0))
    padded = np.concatenate([np.zeros(ctx, np.float32), wav])
    n = (len(wav)) // chunk
    return [padded[i * chunk: i * chunk + ctx + chunk] * float(pre.get("scale", 1.0)) for i in range(n)]


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _audio_samples(model_id: str, manifest: dict[str, Any], files: list[Path], count: int) -> list[dict]:
    data = manifest["data"]
    pre = data["preprocess"]
    inputs = manifest["inputs"]
    wav = np.concatenate([read_wav(f, int(pre["sample_rate"])) for f in files])
    stream = pre.get("stream") or {}
    via = pre.get("via")
    if via:
        frames = _via(via, wav)
    else:
        frames = [c[None].astype(np.float32) for c in _chunks(wav, pre)]
        if pre.get("frames_per_sample"):
            k = int(pre["frames_per_sample"])
            frames = [np.concatenate([f for f in frames[i:i + k]], axis=0) for i in range(0, len(frames) - k + 1, k)]
    rng = np.random.default_rng(0)
    fixed = {n: _fixed(spec, rng) for n, spec in inputs.items() if n != data["input"] and n not in stream}
    if not stream:
        picks = _spread(len(frames), count)
        return [{**fixed, data["input"]: frames[i]} for i in picks]
    # Streaming: run the FP32 model from zero state over every chunk; keep the states each chunk arrived with.
    sess = _session(model_path(model_id))
    out_names = [o.name for o in sess.get_outputs()]
    state = {n: np.zeros(inputs[n]["shape"], _DTYPES[inputs[n]["dtype"]]) for n in stream}
    keep = set(_spread(len(frames), count))
    got = []
    for i, x in enumerate(frames):
        feed = {**fixed, data["input"]: x, **state}
        if i in keep:
            got.append({k: np.array(v) for k, v in feed.items()})
        outs = dict(zip(out_names, sess.run(None, feed)))
        state = {n: outs[o] for n, o in stream.items()}
    return got


def _spread(n: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(n)`` (all of them if fewer)."""
    if n <= count:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / max(count - 1, 1))) for i in range(count)})


def _via(via: dict[str, Any], wav: np.ndarray) -> list[np.ndarray]:
    """openWakeWord's front end: melspectrogram -> (x/10 + 2) -> 76-frame windows -> embedding -> 96-d frames."""
    stage = via["stage"]
    mel = _session(fetch(via["melspectrogram"]))
    spec = mel.run(None, {"input": (wav * 32768.0)[None].astype(np.float32)})[0].squeeze() / 10 + 2  # (frames, 32)
    windows = [spec[i:i + 76] for i in range(0, spec.shape[0] - 75, 8)]
    if stage == "embedding_input":
        return [w[None, :, :, None].astype(np.float32) for w in windows]
    emb = _session(fetch(via["embedding"]))
    feats = emb.run(None, {"input_1": np.stack(windows)[:, :, :, None].astype(np.float32)})[0].reshape(len(windows), 96)
    n = int(via["frames"])
    return [feats[i:i + n][None].astype(np.float32) for i in range(0, len(feats) - n + 1, max(1, n // 2))]
