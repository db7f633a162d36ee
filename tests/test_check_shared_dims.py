"""A Paddle-style input [-1, 3, '?', '?'] (PP-OCR's text direction classifier, corpus F10): the builder refuses a
non-square profile in its own words, ``check`` quotes it, names the dims and offers ``split_shared_dims``, and the
repair a user asks for (``workflows.model.check_and_repair``, ``workbench check --repair``) makes it build.
Real TensorRT-RTX builds on the CPU."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.check import check_model
from workbench.session import Session
from workbench.workflows.model import check_and_repair

pytest.importorskip("tensorrt_rtx", reason="the builder's own words need TensorRT-RTX (the rtx extra)")

SHAPES = "x:1x3x48x192"  # PP-OCR's classifier input: 48 high, 192 wide


def paddle_cls_input(path):
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("GlobalAveragePool", ["y"], ["out"], name="pool")], "cls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [-1, 4, 1, 1])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 7
    onnx.save(m, path)
    return path


def test_check_quotes_the_builder_and_offers_split_shared_dims(tmp_path):
    r = check_model(paddle_cls_input(tmp_path / "cls.onnx"), shapes=SHAPES)
    assert r.parsable and r.buildable is False
    (quote,) = r.builder_errors
    assert "?: Input dimensions with this name have different constant values" in quote
    assert f"tensorrt-rtx builder: {quote}" in r.errors
    (hint,) = [s for s in r.suggestions if "dims of one name" in s]
    assert "input 'x' names dims [2, 3] '?'" in hint and "split_shared_dims" in hint
    assert not any(s.startswith("check the shape profiles") for s in r.suggestions)  # the builder said what it is
    assert [x["kind"] for x in r.repairs] == ["split_shared_dims"]


def test_repair_on_request_is_a_recipe_edit_and_the_model_builds(tmp_path):
    src = paddle_cls_input(tmp_path / "cls.onnx")
    before = src.read_bytes()
    s = Session(src, cache_dir=tmp_path / "cache")
    r = check_and_repair(s, shapes=SHAPES, output=tmp_path / "fixed.onnx", recipe_out=tmp_path / "fixed.json")
    assert r.buildable is False and r.repaired is not None and r.repaired.buildable is True
    assert [e["kind"] for e in r.repaired.edits] == ["split_shared_dims"]
    assert [e.kind for e in s.recipe.edits] == ["split_shared_dims"]
    assert src.read_bytes() == before  # the user's model is never overwritten
    fixed = onnx.load(str(tmp_path / "fixed.onnx"))
    assert [d.dim_param for d in fixed.graph.input[0].type.tensor_type.shape.dim[2:]] == ["?", "?_3"]
    assert check_model(tmp_path / "fixed.onnx", shapes=SHAPES).buildable is True
