"""Fuzzing the loader: mutated sample models never crash the process and raise nothing but WorkbenchError.

The fuzzed loads run in a child process (this file run as a script), so a native crash (segfault, abort in
onnx's C++ checker or shape inference) shows up as a failed test naming the case instead of killing pytest.
Each case is written to disk before it runs; the parent reports the last one when the child dies.
The run is a fixed number of cases from a fixed seed, so every run fuzzes the same inputs (not as many as the
clock allows): a failure reproduces, and a slow machine covers as much as a fast one.
Every tenth model that loads is also saved and loaded again, and must come back byte-identical.
Mutations: byte flips, truncation, insertion, deletion and chunk duplication of the sample files, plus
structure-aware edits (op types, attributes, dims, dtypes, node inputs, opsets, external-data entries) that
get past protobuf parsing and exercise the checker, shape inference, summary and layer table.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = 3000  # about 4 s of CPU
SEED = 20261123


def _sources() -> dict[str, bytes]:
    sys.path.insert(0, str(ROOT / "tests"))
    import models

    out = {p.stem: p.read_bytes() for p in sorted((ROOT / "sample_models").glob("*.onnx"))}
    for make in (models.if_model, models.integer_ops_model, models.unnamed_nodes_model, models.conv_bn_relu_model):
        out[make.__name__] = make().SerializeToString()
    return out


def _byte_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    kind = rng.choice(["flip", "truncate", "insert", "delete", "duplicate", "zero"])
    b = bytearray(data)
    n = len(b)
    if n == 0:
        return "random", bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(n)] = rng.randrange(256)
    elif kind == "truncate":
        b = b[: rng.randrange(n)]
    elif kind == "insert":
        at = rng.randrange(n)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "delete":
        at = rng.randrange(n)
        del b[at: at + rng.randint(1, 64)]
    elif kind == "duplicate":
        at, ln = rng.randrange(n), rng.randint(1, 256)
        b[at:at] = b[at: at + ln]
    else:
        at = rng.randrange(n)
        b[at: at + rng.randint(1, 32)] = bytes(min(32, n - at))
    return kind, bytes(b)


_OPS = ["Conv", "Relu", "Add", "MatMul", "Gemm", "Reshape", "If", "Loop", "Foo", "", "Cast", "Softmax",
        "BatchNormalization", "ConvTranspose", "Constant", "Split", "Concat", "Gather", "Resize", "Pad"]
_INTS = [0, 1, -1, 2, 3, 7, -7, 255, 2**31, -(2**31), 2**62, 10**6]


def _structured_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    import onnx
    from onnx import TensorProto

    m = onnx.ModelProto()
    m.ParseFromString(data)
    g = m.graph
    nodes, inits = list(g.node), list(g.initializer)
    names = [t for n in nodes for t in list(n.input) + list(n.output)] + ["", "ghost", "a" * 300]
    kind = rng.choice(["op", "attr", "dims", "dtype", "elem", "input", "drop", "opset", "external", "shape",
                       "dup_init", "output", "domain", "raw"])
    node = rng.choice(nodes) if nodes else None
    if kind == "op" and node is not None:
        node.op_type = rng.choice(_OPS)
    elif kind == "attr" and node is not None and node.attribute:
        a = rng.choice(list(node.attribute))
        if a.type == onnx.AttributeProto.INT:
            a.i = rng.choice(_INTS)
        elif a.type == onnx.AttributeProto.INTS and len(a.ints):
            a.ints[rng.randrange(len(a.ints))] = rng.choice(_INTS)
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30])
        else:
            a.type = rng.randrange(16)
    elif kind == "dims" and inits:
        t = rng.choice(inits)
        if len(t.dims):
            t.dims[rng.randrange(len(t.dims))] = rng.choice(_INTS)
        else:
            t.dims.append(rng.choice(_INTS))
    elif kind == "dtype" and inits:
        rng.choice(inits).data_type = rng.randrange(0, 26)
    elif kind == "elem" and len(g.input) + len(g.output):
        vi = rng.choice(list(g.input) + list(g.output))
        vi.type.tensor_type.elem_type = rng.randrange(0, 26)
    elif kind == "input" and node is not None and len(node.input):
        node.input[rng.randrange(len(node.input))] = rng.choice(names)
    elif kind == "drop" and nodes:
        del g.node[rng.randrange(len(nodes))]
    elif kind == "opset":
        m.opset_import[0].version = rng.choice([1, 6, 11, 13, 17, 21, 22, 23, 99, -1, 2**40])
    elif kind == "external" and inits:
        t = rng.choice(inits)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in ((("location", rng.choice(["../x", "", "a\x00b", "/etc/hostname", "w.bin", "."]))),
                           ("offset", rng.choice(["0", "-5", "abc", "", "99999999999"])),
                           ("length", rng.choice(["4", "-1", "x", "", "10000000000"]))):
            e = t.external_data.add()
            e.key, e.value = key, value
    elif kind == "shape" and len(g.input) + len(g.output):
        vi = rng.choice(list(g.input) + list(g.output))
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            d = dims[rng.randrange(len(dims))]
            if rng.random() < 0.5:
                d.dim_value = rng.choice(_INTS)
            else:
                d.dim_param = rng.choice(["", "n", "?", "x" * 100])
    elif kind == "dup_init" and inits:
        g.initializer.append(rng.choice(inits))
    elif kind == "output" and len(g.output):
        g.output[rng.randrange(len(g.output))].name = rng.choice(names)
    elif kind == "domain" and node is not None:
        node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "bogus", "ai.onnx"])
    elif kind == "raw" and inits:
        t = rng.choice(inits)
        if t.HasField("raw_data"):
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data) + 1)]
    return f"struct:{kind}", m.SerializeToString()


def _rewrite(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def child(cases: int, seed: int, workdir: Path) -> int:
    """Run ``cases`` fuzz cases drawn from ``seed``; exit 3 on an escape that is not a WorkbenchError."""
    from workbench.errors import WorkbenchError
    from workbench.graph import layer_table, load_model, model_bytes, save_model, summary

    rng = random.Random(seed)
    sources = _sources()
    keys = sorted(sources)
    last = workdir / "last_case.json"
    case = workdir / "case.onnx"
    # two files kept open and rewritten in place: opening files per case was the bottleneck on a busy disk
    last_fd = os.open(last, os.O_WRONLY | os.O_CREAT, 0o644)
    case_fd = os.open(case, os.O_WRONLY | os.O_CREAT, 0o644)
    counts = {"cases": 0, "loaded": 0, "refused": 0}
    while counts["cases"] < cases:
        name = rng.choice(keys)
        data = sources[name]
        for _ in range(rng.randint(1, 3)):  # stack mutations
            try:
                desc, data = (_structured_mutation if rng.random() < 0.6 else _byte_mutation)(rng, data)
            except Exception:  # the structured mutator needs parseable input; fall back to bytes
                desc, data = _byte_mutation(rng, data)
        via_path = rng.random() < 0.5
        _rewrite(case_fd, data)  # always on disk, so a native crash leaves its input behind
        _rewrite(last_fd, json.dumps({"n": counts["cases"], "source": name, "mutation": desc,
                                      "via_path": via_path}).encode())
        counts["cases"] += 1
        try:
            model = load_model(case if via_path else data)
        except WorkbenchError as exc:
            assert exc.message and exc.hint, f"error without message or hint: {exc!r}"
            counts["refused"] += 1
            continue
        except BaseException:
            (workdir / "escape.onnx").write_bytes(data)
            print(json.dumps({"escape": traceback.format_exc(), **json.loads(last.read_text())}))
            return 3
        counts["loaded"] += 1
        try:  # what loads must summarise, and must come back unchanged from what we save
            summary(model)
            layer_table(model)
            if counts["loaded"] % 10 == 1:  # saving syncs to disk: every tenth model
                again = load_model(save_model(model, workdir / "saved.onnx"))
                assert model_bytes(again) == model_bytes(model), "save + load changed the model"
        except BaseException:
            (workdir / "escape.onnx").write_bytes(data)
            print(json.dumps({"escape": traceback.format_exc(), **json.loads(last.read_text())}))
            return 3
    print(json.dumps(counts))
    return 0


def test_fuzzed_models_never_crash_or_escape(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, __file__, str(CASES), str(SEED), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    last = (tmp_path / "last_case.json").read_text() if (tmp_path / "last_case.json").exists() else "?"
    assert proc.returncode == 0, (
        f"fuzz child exited {proc.returncode} (negative = killed by signal) on case {last}; "
        f"input saved in {tmp_path}\nstdout: {proc.stdout[-4000:]}\nstderr: {proc.stderr[-4000:]}")
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"fuzz: {counts}")
    assert counts["cases"] == CASES
    assert counts["refused"] > 0 and counts["loaded"] > 0  # both paths were exercised


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(child(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))
