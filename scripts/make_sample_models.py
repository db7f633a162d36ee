"""Train and export the sample models in sample_models/ (deterministic: fixed seeds, one CPU thread).

    python scripts/make_sample_models.py [--out sample_models]     (or: make samples)

Needs the `dev` extra (PyTorch CPU, scikit-learn). Uses scikit-learn's bundled digits data set (1797 8x8
images, no download). Writes:

- digits_cnn.onnx          Conv-BN-ReLU blocks + residual Add + pooling + Gemm; input `input` (N,1,8,8)
- digits_transformer.onnx  2-layer transformer encoder over 8 tokens (pixel rows) of 8 pixels; input (N,8,8)
- fcn_dynamic.onnx         fully convolutional segmenter; input (N,3,H,W) with dynamic N, H, W
- digits_test.npz / digits_test_seq.npz    held-out test split: `input` + `label`
- digits_calib.npz / digits_calib_seq.npz  300 training images for calibration: `input` only
- README.md                provenance, sha256 of every file, measured accuracies

The BatchNormalization nodes are kept in the exported CNN graph (TrainingMode.PRESERVE on a model in eval
mode): fusing them is a job for the workbench's graph surgery. Every export is checked against ONNX Runtime.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import numpy as np

SEED = 0
OPSET = 17
TEST_FRACTION = 0.2
CALIB_SAMPLES = 300
ROOT = Path(__file__).resolve().parents[1]


def _torch():
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch


def digits_split() -> dict[str, np.ndarray]:
    """Images scaled to [0, 1] as (N,1,8,8) float32, labels int64; a seeded train/test split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    n_test = int(round(len(y) * TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def build_cnn(torch):
    nn = torch.nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = block(1, 16)
            self.res1 = block(16, 16)
            self.res2 = block(16, 16)
            self.pool = nn.MaxPool2d(2)
            self.down = block(16, 32)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.stem(x)
            x = x + self.res2(self.res1(x))
            x = self.down(self.pool(x))
            return self.fc(torch.flatten(self.gap(x), 1))

    return DigitsCNN()


def build_transformer(torch, dim: int = 32, heads: int = 4, layers: int = 2):
    nn = torch.nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.scale = (dim // heads) ** -0.5

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, t, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
            att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
            return self.proj(torch.matmul(att, v).transpose(1, 2).reshape(b, t, dim))

    class EncoderLayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class DigitsTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(8, dim)
            self.pos = nn.Parameter(torch.zeros(1, 8, dim))
            self.layers = nn.Sequential(*[EncoderLayer() for _ in range(layers)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, 10)

        def forward(self, x):
            x = self.layers(self.embed(x) + self.pos)
            return self.head(self.norm(x).mean(dim=1))

    return DigitsTransformer()


def build_fcn(torch, classes: int = 2):
    nn = torch.nn

    class FCN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 16, 3, padding=4, dilation=4), nn.ReLU(),
                nn.Conv2d(16, classes, 1),
            )

        def forward(self, x):
            return self.body(x)

    return FCN()


def train_classifier(torch, model, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float) -> None:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()


def shapes_task(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy RGB images with random rectangles; the label marks pixels of red-dominant rectangles."""
    x = (0.1 * rng.standard_normal((n, 3, size, size))).astype(np.float32)
    y = np.zeros((n, size, size), np.int64)
    for i in range(n):
        for _ in range(3):
            h, w = rng.integers(3, size // 2, 2)
            r, c = rng.integers(0, size - h), rng.integers(0, size - w)
            colour = rng.random(3).astype(np.float32)
            x[i, :, r:r + h, c:c + w] += colour[:, None, None]
            y[i, r:r + h, c:c + w] = int(colour[0] > max(colour[1], colour[2]))
    return x, y


def train_fcn(torch, model, *, steps: int = 300) -> float:
    rng = np.random.default_rng(SEED)
    x, y = shapes_task(256, 24, rng)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (32,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
        opt.step()
    model.eval()
    xv, yv = shapes_task(64, 40, np.random.default_rng(SEED + 1))  # other size: checks the dynamic H, W too
    with torch.no_grad():
        return float((model(torch.from_numpy(xv)).argmax(1).numpy() == yv).mean())


def export(torch, model, example, dynamic_axes: dict, *, keep_batchnorm: bool = False) -> bytes:
    import onnx

    buf = io.BytesIO()
    mode = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                      output_names=["logits"], dynamic_axes=dynamic_axes, training=mode, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    proto.producer_name, proto.producer_version = "onnx-trt-workbench/scripts/make_sample_models.py", "1"
    proto.doc_string = ""
    return proto.SerializeToString(deterministic=True)


def ort_logits(data: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def check_against_torch(torch, model, data: bytes, x: np.ndarray, name: str) -> float:
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(ort_logits(data, x) - ref).max())
    if diff > 1e-3:
        raise SystemExit(f"{name}: ONNX Runtime and PyTorch disagree (max abs diff {diff:.2e})")
    return diff


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_readme(out: Path, facts: dict) -> None:
    files = sorted(p.name for p in out.iterdir() if p.suffix in (".onnx", ".npz"))
    table = "\n".join(f"| `{f}` | {(out / f).stat().st_size:,} | `{sha256(out / f)}` |" for f in files)
    acc = facts["accuracy"]
    text = f"""# Sample models

Produced by `scripts/make_sample_models.py` (regenerate with `make samples`, which installs the `dev` extra:
PyTorch CPU and scikit-learn). Training is seeded (seed {SEED}) and single-threaded; ONNX opset {OPSET},
exported with PyTorch {facts['torch']} (TorchScript exporter, `dynamo=False`). Each export is checked with
`onnx.checker` (full check) and against PyTorch in ONNX Runtime (max abs difference of the logits below).

Data: scikit-learn {facts['sklearn']}'s bundled digits data set (`sklearn.datasets.load_digits`, 1797 8x8
images of handwritten digits, 16 grey levels, no download), scaled to [0, 1]. A seeded permutation holds out
{facts['n_test']} images as the test split; the other {facts['n_train']} train the models. The calibration
split is the first {CALIB_SAMPLES} training images.

| model | input | output | accuracy (ONNX Runtime, test split) | max abs diff vs PyTorch |
|---|---|---|---|---|
| `digits_cnn.onnx` | `input` float32 (N,1,8,8) | `logits` (N,10) | accuracy: digits_cnn = {acc['digits_cnn']:.4f} | {facts['diff']['digits_cnn']:.1e} |
| `digits_transformer.onnx` | `input` float32 (N,8,8) | `logits` (N,10) | accuracy: digits_transformer = {acc['digits_transformer']:.4f} | {facts['diff']['digits_transformer']:.1e} |
| `fcn_dynamic.onnx` | `input` float32 (N,3,H,W) | `logits` (N,2,H,W) | pixel accuracy {facts['fcn_pixel_acc']:.4f} on a synthetic 40x40 task | {facts['diff']['fcn_dynamic']:.1e} |

- **digits_cnn**: Conv-BatchNorm-ReLU blocks, a residual Add, MaxPool, GlobalAveragePool, Flatten, Gemm. The
  BatchNormalization nodes are kept (exported with `TrainingMode.PRESERVE` from eval mode) so graph surgery
  has something to fuse. Dynamic batch `batch`.
- **digits_transformer**: each image is 8 tokens (pixel rows) of 8 pixels; linear embedding + learned
  positions, 2 pre-norm encoder layers (4-head attention as MatMul/Softmax, LayerNormalization, MLP with
  GELU, which opset 17 spells as Div/Erf/Add/Mul), mean over tokens, LayerNormalization, linear head.
  Dynamic batch.
- **fcn_dynamic**: stride-1 Conv-BN-ReLU with dilations 1, 2, 4 and a 1x1 classifier (exported in EVAL
  mode, so its BatchNormalization is folded into the convolutions); dynamic `batch`, `height`, `width`. Trained briefly (300 Adam steps on 24x24 images) on a deterministic synthetic task:
  noisy images with random coloured rectangles, each pixel labelled 1 when it lies in a red-dominant
  rectangle. Its pixel accuracy is measured on 40x40 images (a size it never saw).

Regenerating reproduces these files byte for byte with the same PyTorch, scikit-learn and ONNX Runtime
versions on the same kind of CPU (checked twice here); elsewhere float rounding can change the weights
slightly, so the sha256 below and tests/test_samples.py (which reads them and the accuracies from this file)
must be updated together with the models.

Data files (`input` keyed by the models' input name, first axis = samples):

- `digits_test.npz`: `input` (N,1,8,8) float32, `label` (N,) int64, N = {facts['n_test']}.
- `digits_test_seq.npz`: the same images as `input` (N,8,8) float32, `label` (N,) int64.
- `digits_calib.npz` / `digits_calib_seq.npz`: `input` only, {CALIB_SAMPLES} training images, for calibration.

`trt_artifacts/` holds real trtexec outputs (ResNet-18 on an A100) for the profile views; they are not
produced by this script (see `trt_artifacts/README.md`).

## sha256

| file | bytes | sha256 |
|---|---|---|
{table}
"""
    (out / "README.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sample_models")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch = _torch()
    import sklearn

    split = digits_split()
    x_test, y_test = split["x_test"], split["y_test"]
    facts: dict = {"torch": torch.__version__.split("+")[0], "sklearn": sklearn.__version__,
                   "n_test": len(y_test), "n_train": len(split["y_train"]), "accuracy": {}, "diff": {}}

    batch_axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
    seq = {k: v[:, 0] for k, v in split.items() if k.startswith("x_")}
    jobs = [
        ("digits_cnn", build_cnn, split["x_train"], x_test, 40, 3e-3, True),
        ("digits_transformer", build_transformer, seq["x_train"], seq["x_test"], 60, 2e-3, False),
    ]
    for name, builder, x_train, x_eval, epochs, lr, keep_bn in jobs:
        torch.manual_seed(SEED)
        model = builder(torch)
        train_classifier(torch, model, x_train, split["y_train"], epochs=epochs, lr=lr)
        data = export(torch, model, torch.from_numpy(x_eval[:2]), batch_axes, keep_batchnorm=keep_bn)
        facts["diff"][name] = check_against_torch(torch, model, data, x_eval, name)
        acc = float((ort_logits(data, x_eval).argmax(1) == y_test).mean())
        facts["accuracy"][name] = acc
        (out / f"{name}.onnx").write_bytes(data)
        print(f"{name}: test accuracy {acc:.4f} ({len(data):,} bytes)", file=sys.stderr)

    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "digits_cnn.onnx")).graph.node}
    if "BatchNormalization" not in ops:
        raise SystemExit(f"digits_cnn.onnx lost its BatchNormalization nodes (ops: {sorted(ops)})")

    torch.manual_seed(SEED)
    fcn = build_fcn(torch)
    facts["fcn_pixel_acc"] = train_fcn(torch, fcn)
    example = torch.from_numpy(shapes_task(2, 16, np.random.default_rng(SEED + 2))[0])
    data = export(torch, fcn, example, {"input": {0: "batch", 2: "height", 3: "width"},
                                        "logits": {0: "batch", 2: "height", 3: "width"}})
    probe = shapes_task(3, 37, np.random.default_rng(SEED + 3))[0]
    facts["diff"]["fcn_dynamic"] = check_against_torch(torch, fcn, data, probe, "fcn_dynamic")
    (out / "fcn_dynamic.onnx").write_bytes(data)
    print(f"fcn_dynamic: pixel accuracy {facts['fcn_pixel_acc']:.4f}", file=sys.stderr)

    calib = split["x_train"][:CALIB_SAMPLES]
    np.savez(out / "digits_test.npz", input=x_test, label=y_test)
    np.savez(out / "digits_test_seq.npz", input=x_test[:, 0], label=y_test)
    np.savez(out / "digits_calib.npz", input=calib)
    np.savez(out / "digits_calib_seq.npz", input=calib[:, 0])
    write_readme(out, facts)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
