"""Calibration benchmark: our streamed calibration vs ONNX Runtime's MinMax, Entropy and Percentile calibrators.

A ResNet-18-like CNN (generated, 224x224 inputs, 1000 classes, random He-initialised weights) and 64 samples.
Each calibrator runs in its own child process (so peak RSS is its own: ``ru_maxrss``); all four run side by side
in one invocation and the ratios to ORT's Entropy calibrator are printed. Target: time <= 1x, peak memory
<= 0.25x of ORT Entropy. Also prints ONNX Runtime CPU throughput of the FP32 model, of our INT8 Q/DQ models (placed
for TensorRT, and placed for ONNX Runtime: ``quantize_model(target="onnxruntime")``, calibrated on the tensors that
placement needs) and of ORT's quantize_static variants, all in this process. Target for the ONNX Runtime placement:
>= 1.5x FP32 throughput.

    .venv/bin/python benchmarks/bench_calibration.py [--samples 64] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from generators import resnet


def _child(kind: str, model_path: str, data_path: str, batch: int, out_path: str) -> None:
    """Run one calibrator; print JSON with seconds and peak RSS (MiB) of this process."""
    import warnings

    warnings.simplefilter("ignore")
    data = np.load(data_path)["input"]
    start = time.perf_counter()
    if kind == "workbench":
        from workbench.calibration import calibrate
        from workbench.graph import load_model

        cache = calibrate(load_model(model_path), data_path, method="entropy", batch_size=batch)
        cache.save(Path(out_path).parent)
        tensors = len(cache.tensors)
    else:
        from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter([{"input": data[i : i + batch]} for i in range(0, len(data), batch)])

            def get_next(self) -> dict | None:
                return next(self.it, None)

        method = {"ort-minmax": CalibrationMethod.MinMax, "ort-entropy": CalibrationMethod.Entropy,
                  "ort-percentile": CalibrationMethod.Percentile}[kind]
        with tempfile.TemporaryDirectory() as tmp:
            calibrator = create_calibrator(model_path, None, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                           calibrate_method=method)
            calibrator.collect_data(Reader())
            ranges = calibrator.compute_data()
            tensors = len(ranges.data) if hasattr(ranges, "data") else len(ranges)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"kind": kind, "seconds": seconds, "peak_rss_mb": peak, "tensors": tensors}))


def _throughput(model: onnx.ModelProto, x: np.ndarray, runs: int = 5, repeats: int = 3) -> float:
    """Images per second: the best of ``repeats`` timings of ``runs`` runs (a shared 2-core machine's noise
    otherwise moves single timings by +-30 %)."""
    from workbench.backends.ort import OrtEngine

    engine = OrtEngine(model)
    engine.run({"input": x})
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(runs):
            engine.run({"input": x})
        best = min(best, time.perf_counter() - start)
    return runs * len(x) / best


def _ort_quantize_static(model_path: Path, data: np.ndarray, batch: int, tmp: Path, *, uint8: bool = False,
                         symmetric: bool = False) -> onnx.ModelProto:
    import logging
    import warnings

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": data[i : i + batch]} for i in range(0, len(data), batch)])

        def get_next(self) -> dict | None:
            return next(self.it, None)

    logging.getLogger().setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(model_path), str(tmp / "ort_int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8 if uint8 else QuantType.QInt8,
                        weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": symmetric})
    return onnx.load(tmp / "ort_int8.onnx")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--child", nargs=4, metavar=("KIND", "MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.child[2], args.batch, args.child[3])
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = resnet()  # ResNet-18, BatchNorm folded into conv biases
        model_path, data_path = Path(tmp) / "resnet18_like.onnx", Path(tmp) / "calib.npz"
        onnx.save(model, model_path)
        rng = np.random.default_rng(1)
        np.savez(data_path, input=rng.standard_normal((args.samples, 3, 224, 224)).astype(np.float32))
        print(f"ResNet-18-like, 224x224, {args.samples} samples, batch {args.batch}, "
              f"{sum(int(np.prod(i.dims)) for i in model.graph.initializer) / 1e6:.1f} M params")
        results = {}
        for kind in ("workbench", "ort-minmax", "ort-entropy", "ort-percentile"):
            proc = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--child", kind,
                                   str(model_path), str(data_path), str(Path(tmp) / "out" / "x")],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{kind}: failed\n{proc.stderr[-2000:]}")
                continue
            results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        ref = results.get("ort-entropy")
        print(f"{'calibrator':<16}{'tensors':>8}{'seconds':>10}{'peak MiB':>10}{'time/ORT-ent':>14}{'mem/ORT-ent':>13}")
        for kind, r in results.items():
            tr = r["seconds"] / ref["seconds"] if ref else float("nan")
            mr = r["peak_rss_mb"] / ref["peak_rss_mb"] if ref else float("nan")
            print(f"{kind:<16}{r['tensors']:>8}{r['seconds']:>10.2f}{r['peak_rss_mb']:>10.0f}{tr:>14.2f}{mr:>13.2f}")
        print("(workbench computes max, percentile, entropy and mse thresholds in that one run; ORT calibrates "
              "every float tensor, the workbench only the tensors that get Q/DQ)")

        import warnings

        from workbench.calibration import calibrate
        from workbench.graph import load_model
        from workbench.precision import ScaleCache, activation_tensors, quantize_model

        cache_file = next((Path(tmp) / "out" / "scales").glob("*.json"), None)
        if cache_file is not None:
            fp32 = load_model(model_path)
            int8 = quantize_model(fp32, ScaleCache.load(cache_file))
            x = np.load(data_path)["input"][: args.batch]
            calib = np.load(data_path)["input"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ort_scales = calibrate(fp32, data_path, method="entropy", batch_size=args.batch,
                                       tensors=activation_tensors(fp32, target="onnxruntime"))
            int8_ort = quantize_model(fp32, ort_scales, target="onnxruntime")
            a, b = _throughput(fp32, x), _throughput(int8, x)
            d = _throughput(int8_ort, x)
            print(f"ONNX Runtime CPU throughput, batch {args.batch}: fp32 {a:.1f} img/s")
            print(f"  int8 Q/DQ, workbench (TensorRT placement, symmetric s8) {b:.1f} img/s ({b / a:.2f}x)")
            print(f"  int8 Q/DQ, workbench (ONNX Runtime placement, u8 act.)  {d:.1f} img/s ({d / a:.2f}x; "
                  f"target >= 1.5x: {'met' if d / a >= 1.5 else 'MISSED'})")
            for label, kw in (("ORT quantize_static QDQ, s8 asymmetric", {}),
                              ("ORT quantize_static QDQ, s8 symmetric", {"symmetric": True}),
                              ("ORT quantize_static QDQ, u8 activations", {"uint8": True})):
                c = _throughput(_ort_quantize_static(model_path, calib, args.batch, Path(tmp), **kw), x)
                print(f"  {label:<55} {c:.1f} img/s ({c / a:.2f}x)")
            print("(ORT's fast CPU int8 path needs u8 activations and Q on conv outputs (DQ->Conv->Q -> QLinearConv), "
                  "which the ONNX Runtime placement writes; TensorRT needs symmetric s8 and leaves conv outputs in "
                  "float, which ORT runs as float convs between Q/DQ pairs)")


if __name__ == "__main__":
    main()
