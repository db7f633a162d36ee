"""fp16 and outputs decided by a discrete selection (corpus F7: M-LSD's ``scores = sigmoid * (MaxPool3x3(sigmoid) ==
sigmoid)``, a local-maximum mask): the conversion says so, because fp16 rounding anywhere before the Equal moves
which elements it keeps while the continuous outputs stay close."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.session import Session
from workbench.workflows.quantize import convert


def _peaks(tmp_path) -> tuple[str, np.ndarray]:
    """x -> Conv 3x3 (8 -> 1) -> Sigmoid -> s; y = s * (MaxPool3x3(s) == s); also the score map s as an output."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((1, 8, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"),
             helper.make_node("MaxPool", ["s"], ["m"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Equal", ["m", "s"], ["peak"], name="is_peak"),
             helper.make_node("Cast", ["peak"], ["mask"], name="mask", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["s", "mask"], ["y"], name="keep_peaks")]
    g = helper.make_graph(nodes, "peaks", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 64, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 64, 64]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 1, 64, 64])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "peaks.onnx"
    onnx.save(m, path)
    return str(path), rng.standard_normal((4, 8, 64, 64)).astype(np.float32)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(b.astype(np.float64) - a) / np.linalg.norm(a.astype(np.float64)))


def test_fp16_names_the_output_a_selection_decides(tmp_path):
    path, x = _peaks(tmp_path)
    s = Session(path, cache_dir=tmp_path / "cache")
    r = convert(s, "fp16", data={"x": x})
    assert "conv" in r.converted and "sigmoid" in r.converted
    notes = [w for w in r.warnings if "is decided by Equal 'is_peak'" in w]
    assert len(notes) == 1 and "output 'y'" in notes[0] and "output 's'" not in " ".join(r.warnings)
    ref, low = OrtEngine(s.original), OrtEngine(s.model)
    rs = [ref.run({"x": x[i:i + 1]}) for i in range(len(x))]
    ls = [low.run({"x": x[i:i + 1]}) for i in range(len(x))]
    cont = _rel(np.concatenate([o["s"] for o in rs]), np.concatenate([o["s"] for o in ls]))
    sel = _rel(np.concatenate([o["y"] for o in rs]), np.concatenate([o["y"] for o in ls]))
    assert cont < 2e-3 and sel > 10 * cont  # the score map is fp16-close; the selected peaks are not


def test_no_note_without_a_selection_or_without_fp16_before_it(tmp_path):
    path, x = _peaks(tmp_path)
    s = Session(path, cache_dir=tmp_path / "cache")
    r = convert(s, "fp16", data={"x": x}, keep=["conv", "sigmoid", "pool", "keep_peaks"])
    assert not [w for w in r.warnings if "decided by" in w]
