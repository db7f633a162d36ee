"""The data flags every command that reads inputs shares (``--calib`` / ``--inputs`` take a folder or an .npz).

Not a command (no ``COMMAND``): quantize, compare, debug and profile call :func:`add_data_arguments` and
:func:`read_data`, so one set of flags means the same everywhere and the data layer is the only reader.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..workflows.quantize import Dataset

PREPROCESSING_FLAGS = ("size", "layout", "channels", "mean", "std", "scale", "resize", "pad", "center", "crop_from",
                       "resample", "append_channel", "sample_rate", "chunk", "length")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.replace(",", " ").split())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of numbers (e.g. 0.485,0.456,0.406)") from exc


def _size(text: str) -> tuple[int, int]:
    parts = [p for p in text.lower().replace("x", ",").split(",") if p.strip()]
    try:
        dims = [int(p) for p in parts]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not HEIGHTxWIDTH (e.g. 224x224)") from exc
    if len(dims) == 1:
        dims *= 2
    if len(dims) != 2 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not HEIGHTxWIDTH (e.g. 224x224)")
    return dims[0], dims[1]


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The preprocessing and sample-axis flags (the data path itself is each command's own argument)."""
    g = p.add_argument_group("data (a folder of images/.wav/.npy files, or an .npz with one array per input)")
    g.add_argument("--sample-axis", action="append", default=[], metavar="NAME=AXIS",
                   help="which axis of input NAME indexes samples (default: inferred from the model's input shapes); "
                        "NAME=none for an input every sample shares (e.g. a sample rate); repeatable")
    g.add_argument("--run-length", metavar="N", help="each model run is exactly N consecutive entries of the sample "
                   "axis, never split nor merged (a sequence model's time axis: --run-length 32 feeds runs of 32 "
                   "frames; default: the model's fixed batch, else any batch size)")
    g.add_argument("--data-input", metavar="NAME", help="the model input a folder's files feed (default: the one that fits)")
    g.add_argument("--size", type=_size, metavar="HxW", help="images: resize to HEIGHTxWIDTH (default: the model's)")
    g.add_argument("--layout", choices=("NCHW", "NHWC"), help="images: tensor layout (default: from the model's shape)")
    g.add_argument("--channels", choices=("RGB", "BGR", "GRAY"), help="images: channel order (default RGB, GRAY "
                   "for one channel)")
    g.add_argument("--scale", type=float, help="images: multiply pixel values 0-255 by this (default 1/255)")
    g.add_argument("--mean", type=_floats, metavar="M[,M,M]", help="images: per-channel mean subtracted after scaling")
    g.add_argument("--std", type=_floats, metavar="S[,S,S]", help="images: per-channel std divided by after the mean")
    g.add_argument("--resize", choices=("stretch", "letterbox"), help="images: stretch to --size (default), or "
                   "letterbox: keep the aspect ratio and pad (YOLO-style detectors)")
    g.add_argument("--pad", type=int, metavar="0-255", help="images: the letterbox's fill value (default 114)")
    g.add_argument("--center", action="store_const", const=True, default=None,
                   help="images: centre the letterboxed picture (default: top-left)")
    g.add_argument("--crop-from", type=_size, metavar="HxW", help="images: resize to HEIGHTxWIDTH, then centre-crop "
                   "--size from it (ImageNet-style: --crop-from 256x256 --size 224x224)")
    g.add_argument("--resample", choices=("bilinear", "bicubic", "lanczos", "nearest"),
                   help="images: the resize filter (default bilinear)")
    g.add_argument("--append-channel", type=float, metavar="VALUE", help="images: add a constant channel after the "
                   "mean/std (e.g. 1.0 for a model that takes RGB plus a constant 4th channel, M-LSD)")
    g.add_argument("--sample-rate", type=int, help="audio: resample .wav files to this rate")
    g.add_argument("--chunk", type=int, help="audio: samples per chunk (default: the model's fixed length)")
    g.add_argument("--length", type=int, help="tokens: pad/cut each sequence of ids to this length")


def read_data(args: argparse.Namespace, source: Any, model: Any) -> Dataset:
    """``source`` (a path) read by the data layer, bound to ``model``, with the flags' preprocessing."""
    from ..workflows.quantize import load_inputs  # here, not at start-up: --help builds the flags without numpy

    return load_inputs(source, model, sample_axes=args.sample_axis, input=args.data_input,
                       preprocessing={k: getattr(args, k, None) for k in PREPROCESSING_FLAGS},
                       run_length=getattr(args, "run_length", None))

