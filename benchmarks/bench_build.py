"""TensorRT-RTX ahead-of-time build time per sample model: in-process vs through the worker child.

Prints, per model, the median wall time of N in-process builds and N worker builds (same settings, same
process running both side by side; the worker keeps a warm spare child), the worker overhead (ratio and seconds; target <= 1.3x or <= 0.5 s),
the median of N cold worker builds (no spare: interpreter and library start-up included),
and the timing-cache effect on a rebuild (first build with an empty cache file vs a rebuild reusing it).
TensorRT-RTX documents timing-cache operations as no-ops, so expect ~1.0x there; with full TensorRT the
second build reuses tactic timings. Run: .venv/bin/python benchmarks/bench_build.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from workbench.backends.worker import shutdown_spares
from workbench.build import build_engine
from workbench.graph import load_model, sample_names
from workbench.recipe import BuildSettings


def _timed(model, settings, out, **kw) -> tuple[float, float]:
    t = time.perf_counter()
    r = build_engine(model, settings, out=out, **kw)
    return time.perf_counter() - t, r.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backend", default="tensorrt-rtx")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        settings = BuildSettings(backend=args.backend, timing_cache=False)
        warm = load_model(sample_names()[0])
        build_engine(warm, settings, out=tmp_path / "warm.engine", in_process=True)  # load the builder libraries once
        print(f"{'model':22} {'in-process s':>12} {'worker s':>9} {'ratio':>6} {'overhead s':>10} "
              f"{'builder s':>9} {'target':>7} {'cold worker s':>13}")
        for name in sample_names():
            model = load_model(name)
            inproc, worker, builder, cold = [], [], [], []
            for i in range(args.repeat):  # interleaved so both see the same machine state
                wall, b = _timed(model, settings, tmp_path / f"{name}-in-{i}.engine", in_process=True)
                inproc.append(wall)
                builder.append(b)
                wall, _ = _timed(model, settings, tmp_path / f"{name}-w-{i}.engine", in_process=False)
                worker.append(wall)
                time.sleep(1.0)  # let the next warm spare finish loading so it does not slow the next build
            for i in range(args.repeat):  # no warm spare: the child starts Python and loads TensorRT first
                shutdown_spares()
                cold.append(_timed(model, settings, tmp_path / f"{name}-cold-{i}.engine", in_process=False)[0])
            a, w = statistics.median(inproc), statistics.median(worker)
            ok = w / a <= 1.3 or w - a <= 0.5
            print(f"{name:22} {a:12.3f} {w:9.3f} {w / a:6.2f} {w - a:10.3f} {statistics.median(builder):9.3f} "
                  f"{'met' if ok else 'MISSED':>7} {statistics.median(cold):13.3f}")

        print("\ntiming cache (first build with an empty cache file vs a rebuild reusing it, in-process):")
        for name in sample_names():
            model = load_model(name)
            cache = tmp_path / f"{name}.timing"
            cached = BuildSettings(backend=args.backend, timing_cache=True)
            first, _ = _timed(model, cached, tmp_path / f"{name}-c0.engine", in_process=True, timing_cache_path=cache)
            again = [
                _timed(model, cached, tmp_path / f"{name}-c{i}.engine", in_process=True, timing_cache_path=cache)[0]
                for i in range(1, args.repeat)
            ]
            note = "" if cache.exists() else "  (no cache file written: the backend ignores timing caches)"
            print(f"  {name:22} first {first:.3f} s, rebuild median {statistics.median(again):.3f} s, "
                  f"ratio {statistics.median(again) / first:.2f}{note}")


if __name__ == "__main__":
    main()
