"""Sensitivity sweep on a Dask cluster vs the local thread pool (prints a table; no assertions beyond equality).

Model: a ResNet-50 topology (bottleneck blocks 3-4-6-3, BatchNorm folded, seeded random weights, generated with
onnx.helper in ``generators.resnet``) quantized to INT8 Q/DQ with max scales; every quantized layer is ranked
(``workbench.debug.sensitivity``) over N samples. Runs:

- ``local threads x W``: the thread pool of one process (W threads, single-threaded ONNX Runtime sessions);
- ``cluster x K``: ``connect("local:K")`` (K worker processes on 127.0.0.1, one task thread each, ONNX Runtime
  single-threaded per task, so each worker stands for one core of a machine), the same batches
  (``workers=W`` fixes the split) sent as Dask tasks, results merged in batch order.

Every run's ranking table must equal the local one bit for bit. Reported: seconds (median of ``--repeats``),
speed-up over one worker, its share of the ideal K, and the cluster's overhead on one machine (cluster x W over
local threads x W). Cluster start-up (worker processes) is not timed; sending the models and batches is. Each
cluster run also prints where its time went (``Cluster.last_sweep``): the client's preparation (variants, tails
model, plan; the local run pays it too), pickling the task once, sending it to one worker, the warm-up (every
worker fetching, unpickling and opening its ONNX Runtime sessions) and the steady part (the batches once every
worker is warm), with the speed-up of that parallel part beside the whole sweep's.

Run: .venv/bin/python benchmarks/bench_cluster.py [--quick] [--samples 256] [--image 64] [--workers 1 2 4 8 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from generators import resnet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.backends.ort import OrtEngine, with_outputs  # noqa: E402
from workbench.cluster import connect  # noqa: E402
from workbench.data import Dataset  # noqa: E402
from workbench.debug import sensitivity  # noqa: E402
from workbench.graph import load_model  # noqa: E402
from workbench.precision import quantize_model  # noqa: E402


def max_scales(model, x: np.ndarray) -> dict[str, float]:
    acts = ["input"] + [o for n in model.graph.node for o in n.output if n.op_type not in ("Shape", "Constant")]
    eng = OrtEngine(with_outputs(model, acts))
    amax = dict.fromkeys(acts, 0.0)
    for i in range(0, len(x), 16):
        v = {"input": x[i:i + 16], **eng.run({"input": x[i:i + 16]}, outputs=acts[1:])}
        for t in acts:
            amax[t] = max(amax[t], float(np.abs(v[t]).max()))
    return amax


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="a smoke run: small ResNet, 32x32, 32 samples, 1-2 workers")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--image", type=int, default=64, help="input height and width")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--batch-size", type=int, default=128, help="split into batches of batch-size / max(workers)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--split", type=int, default=None,
                   help="workers that fix the batch split (default: the largest of --workers); equal --split makes "
                        "runs of separate invocations comparable")
    p.add_argument("--no-local", action="store_true",
                   help="skip the local thread-pool runs (the first cluster run is then the reference)")
    args = p.parse_args()
    if args.quick:
        args.samples, args.image, args.workers = 32, 32, [1, 2]
        model = resnet((1, 1, 1, 1), (8, 16, 32, 64), image=32, classes=10, bottleneck=True, cifar_stem=True, seed=0)
        label = "ResNet-50-style bottleneck net, 1-1-1-1 blocks, widths 8-64 (quick)"
    else:
        model = resnet((3, 4, 6, 3), (64, 128, 256, 512), image=args.image, classes=1000, bottleneck=True, seed=0)
        label = f"ResNet-50 topology (3-4-6-3 bottlenecks, 25.6 M parameters), {args.image}x{args.image}"
    ref = load_model(model)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((args.samples, 3, args.image, args.image)).astype(np.float32)
    t = time.perf_counter()
    cand = load_model(quantize_model(ref, max_scales(ref, x[:32])))
    prep = time.perf_counter() - t
    data = Dataset({"input": x})
    w = args.split or max(args.workers)
    kw = dict(batch_size=args.batch_size, workers=w)
    step = -(-args.batch_size // w)
    print(f"{label}; {args.samples} samples in batches of {step}; {os.cpu_count()} cores; quantized in {prep:.1f} s",
          flush=True)

    local_s, local, one_local_s = None, None, None
    if not args.no_local:
        local_s, local = timed(lambda: sensitivity(ref, cand, data, **kw), args.repeats)
        print(f"  local threads x {w}: {local_s:.2f} s ({len(local.table.rows)} layers)", flush=True)
    if not args.no_local and 1 in args.workers and w > 1:  # one thread, for the one-machine overhead at K=1
        one_local_s, one = timed(lambda: sensitivity(ref, cand, data, batch_size=args.batch_size, workers=1),
                                 args.repeats)
        same = "identical to" if one.table.records() == local.table.records() else "DIFFERS from"
        print(f"  local threads x 1: {one_local_s:.2f} s ({same} threads x {w})", flush=True)
    cluster_s: dict[int, float] = {}
    steady_s: dict[int, float] = {}
    for k in args.workers:
        with connect(f"local:{k}") as c:
            c.threads_per_task = 1
            c.probe()
            s, r = timed(lambda: sensitivity(ref, cand, data, cluster=c, **kw), args.repeats)  # noqa: B023
            what = "local" if local is not None else "the first cluster run"
            if local is None:
                local = r
            assert r.table.records() == local.table.records(), f"cluster x {k} differs from {what}"
            cluster_s[k] = s
            top = r.table.records()[0]
            print(f"  cluster x {k}: {s:.2f} s (identical to {what}; top {top['node']} {float(top['score']):.9g})",
                  flush=True)
            sw = c.last_sweep
            if sw is not None:  # the last repeat's phases
                steady_s[k] = sw.done - sw.ready
                warm = sorted(sw.warm_up) or [0.0]
                print(f"    phases: client prep {s - sw.done:.2f} s, pickle {sw.pack:.2f} s, share {sw.share:.2f} s, "
                      f"all {len(warm)} workers warm at {sw.ready:.2f} s (each {warm[0]:.2f}-{warm[-1]:.2f} s), "
                      f"steady {steady_s[k]:.2f} s for {sw.tasks} tasks", flush=True)

    base = cluster_s.get(1)
    print()
    print("| run | seconds | speed-up vs 1 worker | share of ideal | steady s | steady speed-up | share of ideal |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    if local_s is not None:
        print(f"| local threads x {w} | {local_s:.2f} | | | | | |")
    if one_local_s is not None:
        print(f"| local threads x 1 | {one_local_s:.2f} | | | | | |")
    one_steady = steady_s.get(1)
    for k, s in cluster_s.items():
        whole = f"{base / s:.2f} | {base / s / k:.2f}" if base else " | "
        st = steady_s.get(k)
        par = f"{one_steady / st:.2f} | {one_steady / st / k:.2f}" if one_steady and st else " | "
        print(f"| cluster x {k} | {s:.2f} | {whole} | {'' if st is None else f'{st:.2f}'} | {par} |")
    if w in cluster_s and local_s is not None:
        print(f"\noverhead on one machine: cluster x {w} / local threads x {w} = {cluster_s[w] / local_s:.2f}")
    if one_local_s is not None and 1 in cluster_s:
        print(f"overhead on one machine: cluster x 1 / local threads x 1 = {cluster_s[1] / one_local_s:.2f}")


if __name__ == "__main__":
    main()
