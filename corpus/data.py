"""Turn a corpus model's fetched data files into model inputs, with the preprocessing its own package applies.

``samples(id, count)`` gives a list of feeds (one per sample, each input at the manifest's per-sample shape);
``sample_feeds(id, count)`` stacks them along each input's ``sample_axis`` (inputs with ``sample_axis`` null are
fixed: given once, from the manifest's ``value`` or zeros). ``save_npz(id, count, path)`` writes the stacked feeds.

The manifest's ``data.preprocess`` says how, per ``data.kind``:

- ``image``: ``size`` [H, W], ``resize`` (``stretch``, or ``letterbox`` with ``pad`` and ``center``), ``crop_from``
  [H, W] (resize to that, then centre-crop ``size``), ``resample`` (bilinear, lanczos, bicubic, nearest),
  ``channels`` RGB/BGR/GRAY, ``scale`` or ``scale_by_image_max``, ``mean``, ``std`` (per channel, in the model's
  channel order), ``append_channel`` (a constant channel after normalisation), ``transpose_hw``, ``layout``
  NCHW/NHWC, ``regions`` (boxes of the files that are the samples: text lines; see :func:`image_samples`)
  (all but ``scale_by_image_max``, ``transpose_hw`` and ``regions`` done by the product's own
  ``workbench.data.image_array``, so the corpus tests what a user's ``--calib FOLDER`` gets). More samples than images are made from the same images by crops (quarters, then halves) so every
  sample is a real photo region.
- ``audio``: 16-bit PCM wav at ``sample_rate``, cut into ``chunk`` samples, each prefixed with the ``context``
  samples before it (Silero VAD v5's wrapper does that), times ``scale`` (openWakeWord feeds int16-valued floats).
  ``stream`` maps each recurrent state input to the output that carries it: the FP32 model runs over the wav chunk
  by chunk from zero state, and each sample records the chunk with the state the model had when it arrived, as a
  streaming user would feed it. ``via`` names a front end (another corpus model and how its output becomes this
  model's input), e.g. openWakeWord's melspectrogram -> embedding -> wake word classifier.
- ``bytes``: Magika's features: the first ``beg_size`` and last ``end_size`` bytes of each file (whitespace stripped),
  padded with ``padding_token``, as int32.
- ``tokens``: the lines of the ``text`` member with at least 5 words, encoded by the ``tokenizer`` member (a Hugging
  Face tokenizer.json, read with the ``tokenizers`` library), padded/truncated to ``length``; ``attention_mask`` and
  ``token_type_ids`` name the inputs that get the mask and zeros. ``pooling: "mean"`` is for the metric:
  :func:`pooled` turns the model's last_hidden_state into the masked mean, L2-normalised, as the package does.
"""

from __future__ import annotations

import io
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from corpus.fetch import CorpusError, data_dir, data_files, fetch, load_manifest, member_name, model_path

__all__ = ["samples", "sample_feeds", "save_npz", "read_wav", "image_samples", "token_samples", "mean_pool",
           "pooled"]

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
    elif kind == "tokens":
        return token_samples(model_id, count)
    elif kind == "npz":
        with np.load(files[0]) as z:
            return [{n: z[n][i] if inputs[n].get("sample_axis") is not None else z[n] for n in inputs}
                    for i in range(min(count, len(z[data["input"]])))]
    else:
        raise CorpusError(f"manifest '{model_id}': data.kind '{kind}' is not image, audio, bytes, tokens or npz",
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
    """Preprocessed images, one batch-1 array each; crops of the same images when ``count`` exceeds the files.

    With ``regions`` ({file name: [[x0, y0, x1, y1], ...]}) the samples are those boxes of those files, in order
    (text lines cut from a page for a text-line recogniser), and no more; ``rotations`` (degrees, e.g. [0, 180]
    for a text direction classifier) gives each box in each rotation, box by box."""
    from PIL import Image

    regions = pre.get("regions")
    if regions:
        by_name = {f.name: f for f in files}
        missing = [n for n in regions if n not in by_name]
        if missing:
            raise CorpusError(f"preprocess.regions names {missing}, not among the data files {sorted(by_name)}",
                              hint="name files that data.source.members extracts")
        turns = [int(r) for r in pre.get("rotations", [0])]
        cuts = [(by_name[n], tuple(int(v) for v in box), r) for n, bs in regions.items() for box in bs for r in turns]
        return [_preprocess_image(Image.open(f).crop(box).rotate(r, expand=True), pre) for f, box, r in cuts[:count]]
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
    """One image as the model's package prepares it (see the module docstring for the keys); batch-1 array.

    The product's image preprocessing (``workbench.data.image_array``) does the geometry, channels, scale,
    mean/std and ``append_channel``; only ``scale_by_image_max`` and ``transpose_hw`` are the corpus's own."""
    from workbench.data import image_array, resize_image
    from workbench.errors import RecipeError
    from workbench.recipe import Preprocessing

    keys = {k: pre[k] for k in ("channels", "resize", "pad", "center", "resample", "append_channel") if k in pre}
    for k in ("size", "crop_from", "mean", "std"):
        if k in pre:
            keys[k] = tuple(pre[k])
    if "resample" in keys:
        keys["resample"] = str(keys["resample"]).lower()
    try:
        settings = Preprocessing(**keys, scale=float(pre.get("scale", 1.0)), layout="NHWC", dtype="float32")
    except RecipeError as exc:
        raise CorpusError(f"preprocess: {exc.message}", hint=exc.hint or "see corpus/README.md") from exc
    if pre.get("scale_by_image_max"):  # rembg: divide by the image's own maximum (replaces `scale`)
        img = resize_image(img, settings)
        peak = max(float(np.asarray(img).max()), 1e-6)
        settings = replace(settings, size=(), crop_from=(), resize="stretch", scale=1.0 / peak)
    x = image_array(img, settings)
    if pre.get("transpose_hw"):  # MTCNN feeds the picture with H and W swapped
        x = x.transpose(1, 0, 2)
    if pre.get("layout", "NCHW") == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=_DTYPES[pre.get("dtype", "float32")])


# ---------------------------------------------------------------- tokens


def _text_lines(path: Path, min_words: int = 5) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if len(line.split()) >= min_words]


def _tokenizer(path: Path, length: int) -> Any:
    """A ``tokenizers.Tokenizer`` from a tokenizer.json, padded and truncated to exactly ``length`` tokens."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise CorpusError("token data needs the `tokenizers` library",
                          hint="pip install tokenizers (it is in the `test` extra)") from exc
    tok = Tokenizer.from_file(str(path))
    pad = tok.padding or {}
    pad_token = pad.get("pad_token")
    pad_id = pad.get("pad_id")
    if pad_token is None:
        pad_token = next((t for t in ("[PAD]", "<pad>", "<|pad|>") if tok.token_to_id(t) is not None), "[PAD]")
    if pad_id is None:
        pad_id = tok.token_to_id(pad_token) or 0
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length, pad_id=pad_id, pad_token=pad_token)
    return tok


def token_samples(model_id: str, count: int = 8) -> list[dict[str, np.ndarray]]:
    """``count`` text samples of ``model_id``: token ids (and mask, zero token types) of shape [1, length] each."""
    manifest = load_manifest(model_id)
    fetch(model_id)
    data, inputs = manifest["data"], manifest["inputs"]
    pre = data.get("preprocess") or {}
    where = f"manifest '{model_id}'"
    missing = [k for k in ("tokenizer", "text", "length") if k not in pre]
    if missing:
        raise CorpusError(f"{where}: token data lacks preprocess.{', preprocess.'.join(missing)}",
                          hint="see the tokens keys in corpus/README.md")
    folder = data_dir(model_id)
    length = int(pre["length"])
    tok = _tokenizer(folder / member_name(pre["tokenizer"]), length)
    lines = _text_lines(folder / member_name(pre["text"]))
    if not lines:
        raise CorpusError(f"{where}: {pre['text']} has no line of at least 5 words",
                          hint="name another text member in preprocess.text")
    rng = np.random.default_rng(0)
    named = {data["input"]: "ids", pre.get("attention_mask"): "mask", pre.get("token_type_ids"): "types"}
    out = []
    for enc in tok.encode_batch(lines[:count]):
        values = {"ids": enc.ids, "mask": enc.attention_mask, "types": [0] * length}
        feed = {}
        for name, spec in inputs.items():
            role = named.get(name)
            feed[name] = (np.asarray([values[role]], dtype=_DTYPES[spec["dtype"]]) if role
                          else _fixed(spec, rng))
        out.append(feed)
    return out


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over the sequence axis of ``hidden`` [batch, seq, dim], L2-normalised: [batch, dim]."""
    m = np.asarray(mask, np.float64)[..., None]
    summed = (np.asarray(hidden, np.float64) * m).sum(axis=1)
    mean = summed / np.maximum(m.sum(axis=1), 1e-9)
    norm = np.linalg.norm(mean, axis=-1, keepdims=True)
    return (mean / np.maximum(norm, 1e-12)).astype(np.float32)


def pooled(manifest: dict[str, Any], output: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """What the metric compares for ``output`` (the manifest's ``output`` tensor) given the ``feeds`` that made it:
    the mean-pooled, L2-normalised embedding when ``data.preprocess.pooling`` is ``"mean"`` (the attention mask
    from the input ``preprocess.attention_mask`` names, else all ones), else ``output`` unchanged."""
    pre = ((manifest.get("data") or {}).get("preprocess")) or {}
    pooling = pre.get("pooling")
    if not pooling:
        return output
    if pooling != "mean":
        raise CorpusError(f"manifest '{manifest.get('id')}': pooling '{pooling}' is not 'mean'",
                          hint="corpus/README.md")
    mask_name = pre.get("attention_mask")
    mask = feeds[mask_name] if mask_name in feeds else np.ones(output.shape[:2], np.int64)
    return mean_pool(output, mask)


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
