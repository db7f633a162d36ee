"""The TensorRT-RTX parser and AOT builder, in-process through run_job (real tensorrt_rtx, small models)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from models import conv_bn_relu_model, dynamic_model, integer_ops_model

from workbench.backends.trt import backend_status, parse_layer_info, resolve_backend, run_job
from workbench.backends.trt_profiles import profiles_to_json, resolve_profiles
from workbench.errors import BackendUnavailable
from workbench.graph import load_model, tensor_infos


def _job(model: onnx.ModelProto, tmp_path: Path, **extra) -> dict:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    job = {"backend": "tensorrt-rtx", "model_path": str(path), "engine_path": str(tmp_path / "m.engine"),
           "profiles": profiles_to_json(resolve_profiles(load_model(model)).profiles)}
    job.update(extra)
    return job


def test_backend_choice_is_per_call_and_explains_missing_tensorrt():
    status = backend_status()
    assert status["tensorrt-rtx"] is None  # installed in the venv
    assert resolve_backend("tensorrt-rtx") == "tensorrt-rtx"
    if status["tensorrt"] is None:
        assert resolve_backend("auto") == "tensorrt"
    else:
        assert resolve_backend("auto") == "tensorrt-rtx"
        with pytest.raises(BackendUnavailable) as err:
            resolve_backend("tensorrt")
        assert "pip install 'onnx-trt-workbench[tensorrt]'" in err.value.hint
    with pytest.raises(BackendUnavailable):
        resolve_backend("tensorflow")


def test_build_writes_engine_and_reports_io_layers_and_progress(tmp_path):
    model = load_model(conv_bn_relu_model())
    events = []
    r = run_job(_job(model, tmp_path), events.append)
    assert r["parsable"] and r["built"] and not r["cancelled"]
    data = (tmp_path / "m.engine").read_bytes()
    assert r["bytes"] == len(data) and data[:4] == b"vtrt"
    infos = tensor_infos(model)
    io = {t["name"]: t for t in r["io"]}
    assert set(io) == {"input", "logits"}
    assert tuple(io["input"]["shape"]) == infos["input"].shape and io["input"]["dtype"] == "float32"
    assert tuple(io["logits"]["shape"]) == infos["logits"].shape
    # engine layers (DETAILED verbosity) name the ONNX nodes they fused, all real node names
    names = {n.name for n in model.graph.node}
    covered = {n for layer in r["engine_layers"] for n in layer["onnx_nodes"]}
    assert covered and covered <= names
    assert any(n.endswith(".conv") for n in covered)
    assert r["layers"] == len(r["engine_layers"])
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[0]["parent"] is None and progress[-1].get("done")
    assert any(e["event"] == "log" for e in events)


def test_dynamic_model_builds_with_its_profile(tmp_path):
    model = load_model(dynamic_model())
    r = run_job(_job(model, tmp_path))
    assert r["built"]
    (inp,) = [t for t in r["io"] if t["mode"] == "input"]
    assert inp["shape"][0] == -1 and inp["shape"][1] == 3 and inp["shape"][2] == -1


def test_parse_errors_name_the_ort_integer_nodes(tmp_path):
    model = load_model(integer_ops_model())
    r = run_job(_job(model, tmp_path))
    assert r["parsable"] is False and r["built"] is False
    expected = {n.name for n in model.graph.node if n.op_type in ("DynamicQuantizeLinear", "ConvInteger",
                                                                    "MatMulInteger")}
    assert {e["node"] for e in r["errors"]} == expected
    assert {e["node"] for e in r["support"]["errors"]} == expected
    assert r["support"]["supported"] is False
    assert all(e["code"] == "UNSUPPORTED_NODE" and "integer op" in e["reason"] for e in r["errors"])
    assert not (tmp_path / "m.engine").exists()


def test_in_process_cancel_stops_the_build_and_writes_nothing(tmp_path):
    model = load_model(conv_bn_relu_model())
    r = run_job(_job(model, tmp_path), cancel=lambda: True)
    assert r["parsable"] and not r["built"] and r["cancelled"]
    assert not (tmp_path / "m.engine").exists()


def test_unknown_compute_capability_is_a_build_error(tmp_path):
    from workbench.errors import BuildError

    model = load_model(conv_bn_relu_model())
    with pytest.raises(BuildError) as err:
        run_job(_job(model, tmp_path, compute_capabilities=["SM99"]))
    assert "SM99" in err.value.message and "SM86" in err.value.hint
    r = run_job(_job(model, tmp_path, compute_capabilities=["8.6", "sm_89"]))
    assert r["built"]


def test_parse_layer_info_reads_fused_onnx_nodes():
    text = ("Layers:\nName: conv0_myl0_2, LayerType: correlation, Inputs: [], TacticName: __myelin_CASK_STUB, "
            "StreamId: 0, Metadata: [ONNX Layer: conv0]\x1f[ONNX Layer: relu0]\n"
            "Name: __myl_Move_1, LayerType: kgen, Inputs: [], TacticName: __myl_Move_0x1, StreamId: 0, Metadata: \n")
    layers = parse_layer_info(text)
    assert [la["name"] for la in layers] == ["conv0_myl0_2", "__myl_Move_1"]
    assert layers[0]["onnx_nodes"] == ["conv0", "relu0"] and layers[0]["type"] == "correlation"
    assert layers[1]["onnx_nodes"] == [] and layers[1]["tactic"] == "__myl_Move_0x1"


def test_backend_protocol_view_says_it_cannot_run_without_a_gpu():
    from workbench.backends.base import Backend
    from workbench.backends.trt import TrtBackend
    from workbench.backends.trt_runtime import gpu_status

    b = TrtBackend("tensorrt-rtx")
    assert isinstance(b, Backend) and b.name == "tensorrt-rtx"
    if gpu_status() is None:  # pragma: no cover - only with a GPU
        pytest.skip("a GPU is present")
    assert "no supported NVIDIA GPU" in b.available()
    with pytest.raises(BackendUnavailable) as err:
        b.build(conv_bn_relu_model())
    assert "onnxruntime" in err.value.hint
    if backend_status()["tensorrt"] is not None:
        assert "pip install 'onnx-trt-workbench[tensorrt]'" in TrtBackend("tensorrt").available()


def test_precision_comes_from_the_graph_casts(tmp_path):
    """Strongly typed: a Cast-to-fp16 Conv builds with Half tensors in its engine layer, no builder flags."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float16), "w")
    nodes = [helper.make_node("Cast", ["input"], ["x16"], name="to_fp16", to=TensorProto.FLOAT16),
             helper.make_node("Conv", ["x16", "w"], ["y16"], name="conv16", pads=[1, 1, 1, 1]),
             helper.make_node("Cast", ["y16"], ["output"], name="to_fp32", to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "fp16", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    r = run_job(_job(model, tmp_path))
    assert r["built"]
    (conv,) = [la for la in r["engine_layers"] if la["onnx_nodes"] == ["conv16"]]
    assert {t["DataType"] for t in conv["Inputs"] + conv["Outputs"]} == {"Half"}
    (back,) = [la for la in r["engine_layers"] if la["onnx_nodes"] == ["to_fp32"]]
    assert [t["DataType"] for t in back["Inputs"] + back["Outputs"]] == ["Half", "Float"]
    assert [t["dtype"] for t in r["io"]] == ["float32", "float32"]  # the I/O stays fp32 as the graph says


def test_builder_failure_without_a_profile_is_reported_not_raised(tmp_path):
    events = []
    r = run_job(_job(load_model(dynamic_model()), tmp_path, profiles=[]), events.append)
    assert r["parsable"] and not r["built"] and not r["cancelled"]
    errors = [e["message"] for e in events if e["event"] == "log" and e["level"] == "error"]
    assert any("profile" in m.lower() for m in errors)
    assert not (tmp_path / "m.engine").exists()
