"""Session: undo/redo, digest-cached models, last good state on bad edits, save/load/replay, export."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.models import conv_bn_relu_model, dynamic_model, random_feeds, unnamed_nodes_model
from workbench import recipe as R
from workbench.backends.ort import OrtEngine
from workbench.errors import EditError, ModelError, RecipeError, WorkbenchError
from workbench.graph import load_model, model_bytes, sha256_file
from workbench.session import Session


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save_model(conv_bn_relu_model(), path)
    return path


def test_apply_undo_redo_and_cached_models(model_path, tmp_path) -> None:
    source = model_path.read_bytes()
    s = Session(model_path, cache_dir=tmp_path / "cache")
    seen = []
    s.on_change(lambda sess: seen.append((sess.last_change.action, len(sess.recipe.edits))))
    original = s.model
    assert s.model is s.original and not s.can_undo and not s.can_redo
    assert s.recipe.model.sha256 == sha256_file(model_path) and s.source_path == model_path.resolve()
    fused = s.apply(R.FuseBatchNorm())
    assert len(fused.graph.node) == len(original.graph.node) - 3
    assert s.last_change.removed == ("block1.bn", "block2.bn", "block3.bn")
    s.apply(R.BypassNode(node="block2.relu"))
    assert s.can_undo and not s.can_redo and s.position == 2
    s.undo()
    assert s.model is fused and s.can_redo  # a cursor move: the cached model, not a recomputation
    s.undo()
    assert s.model is original
    assert s.last_change.added == ("block1.bn", "block2.bn", "block3.bn")
    s.redo()
    assert s.model is fused
    s.apply(R.RemoveIdentity())  # a new edit drops the redo branch
    assert not s.can_redo and [e.kind for e in s.recipe.edits] == ["fuse_batchnorm", "remove_identity"]
    assert seen == [("apply", 1), ("apply", 2), ("undo", 1), ("undo", 0), ("redo", 1), ("apply", 2)]
    with pytest.raises(EditError, match="nothing to redo"):
        s.redo()
    assert model_path.read_bytes() == source  # edits, undo and redo never wrote to the user's file


def test_bad_edit_keeps_the_last_good_state(model_path) -> None:
    s = Session(model_path)
    s.apply(R.FuseBatchNorm())
    recipe, model, digest = s.recipe, s.model, s.digest
    calls = []
    s.on_change(lambda sess: calls.append(1))
    for bad in (R.RemoveNode(node="ghost"), R.BypassNode(node="fc", input_index=5), R.InsertNode(tensor="nowhere", op="Relu"),
                R.RemoveNode(node="block1.conv")):
        with pytest.raises(EditError) as info:
            s.apply(bad)
        assert info.value.hint
        assert s.recipe is recipe and s.model is model and s.digest == digest
    assert calls == [] and s.position == 1


def test_export_is_byte_identical_to_replay_and_never_overwrites_the_source(model_path, tmp_path) -> None:
    s = Session(model_path)
    s.apply(R.FoldConstants())
    s.apply(R.FuseBatchNorm())
    s.apply(R.InsertNode(tensor="logits", op="Softmax", name="probs", attributes={"axis": 1}))
    out = s.export(tmp_path / "out" / "edited.onnx")
    assert out.read_bytes() == model_bytes(s.model)
    source = model_path.read_bytes()
    with pytest.raises(ModelError, match="refusing to overwrite the source model"):
        s.export(model_path)
    assert model_path.read_bytes() == source
    s.save(tmp_path / "recipes" / "r.json")
    saved = json.loads((tmp_path / "recipes" / "r.json").read_text())
    assert saved["model"]["path"] == "../model.onnx"  # relative to the recipe
    again = Session.load(tmp_path / "recipes" / "r.json")
    assert again.digest == s.digest and model_bytes(again.model) == out.read_bytes()
    assert again.position == 3 and again.can_undo  # a loaded recipe can be undone edit by edit
    again.undo()
    assert [e.kind for e in again.recipe.edits] == ["fold_constants", "fuse_batchnorm"]
    feeds = random_feeds(again.original)
    probs = OrtEngine(s.model).run(feeds)["logits"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    s.export(model_path, overwrite=True)  # explicitly asked
    assert model_path.read_bytes() == out.read_bytes()


def test_sha_mismatch_template_and_missing_model(model_path, tmp_path) -> None:
    s = Session(model_path)
    s.apply(R.FuseBatchNorm())
    s.save(tmp_path / "r.json")
    other = tmp_path / "other.onnx"
    onnx.save_model(conv_bn_relu_model(seed=9), other)
    pinned = R.Recipe.from_json((tmp_path / "r.json").read_text())
    with pytest.raises(RecipeError, match="sha256") as info:
        Session(other, recipe=pinned)
    assert "template" in info.value.hint
    template = pinned.replace(model=None, node_names={})
    t = Session(other, recipe=template)
    assert "BatchNormalization" not in {n.op_type for n in t.model.graph.node}
    assert t.recipe.model.sha256 == sha256_file(other)  # pinned to the model it was applied to
    with pytest.raises(RecipeError, match="is a template"):
        (tmp_path / "t.json").write_text(template.to_json())
        Session.load(tmp_path / "t.json")
    assert Session.load(tmp_path / "t.json", model=other).digest == t.digest
    model_path.rename(tmp_path / "moved.onnx")
    with pytest.raises(RecipeError, match="is not found") as info:
        Session.load(tmp_path / "r.json")
    assert "workbench edit" in info.value.hint
    bad = pinned.replace(edits=(R.FuseBatchNorm(), R.RemoveNode(node="ghost")))
    with pytest.raises(RecipeError, match=r"failed at edit 2 of 2 \(remove_node\): .*no node named 'ghost'"):
        Session(tmp_path / "moved.onnx", recipe=bad)


def test_node_names_are_recorded_and_replayed_explicitly(tmp_path) -> None:
    s = Session(unnamed_nodes_model())
    assert s.recipe.node_names == {"0": "Relu_0", "2": "dup_1", "3": "Sigmoid_3"}
    assert [n.name for n in s.model.graph.node] == ["Relu_0", "dup", "dup_1", "Sigmoid_3", "last"]
    s.apply(R.BypassNode(node="dup_1"))
    renamed = s.recipe.replace(node_names={"0": "first", "2": "abs", "3": "sig"},
                               edits=(R.BypassNode(node="abs"),))
    r = Session(unnamed_nodes_model(), recipe=renamed)
    assert [n.name for n in r.model.graph.node] == ["first", "dup", "sig", "last"]
    with pytest.raises(RecipeError, match="index '7'"):
        Session(unnamed_nodes_model(), recipe=renamed.replace(node_names={"7": "x"}, edits=()))


def test_settings_are_recorded_and_undoable() -> None:
    s = Session(dynamic_model())
    model = s.model
    s.set_build(R.BuildSettings(profiles=(R.ShapeProfile("input", (1, 3, 8, 8), (1, 3, 32, 32), (1, 3, 64, 64)),)))
    s.set_calibration(R.CalibrationSettings(method="percentile", samples=16))
    assert s.recipe.build.profiles[0].opt == (1, 3, 32, 32) and s.recipe.calibration.method == "percentile"
    assert s.model is model and s.last_change.action == "set_calibration"
    d = s.digest
    s.undo()
    assert s.recipe.calibration is None and s.recipe.build is not None and s.digest != d
    s.undo()
    assert s.recipe.build is None


def test_precision_edits_go_through_the_precision_module() -> None:
    s = Session(conv_bn_relu_model())
    edit = R.ConvertPrecision(precision="fp16")
    try:
        from workbench.precision import apply_precision_edit  # noqa: F401
    except ImportError:
        with pytest.raises(EditError, match="apply_precision_edit"):
            s.apply(edit)
        assert not s.can_undo
    else:
        out = s.apply(edit)
        assert "Cast" in {n.op_type for n in out.graph.node}


# --- property: any sequence of edits (valid or not) then undo-all returns the original bytes ---------

_POOL = [
    R.FoldConstants(), R.FuseBatchNorm(), R.RemoveIdentity(), R.RemoveDeadNodes(),
    R.BypassNode(node="block2.relu"), R.BypassNode(node="block3.relu"),
    R.InsertNode(tensor="logits", op="Relu"), R.InsertNode(tensor="pool_out", op="Sigmoid", name="sig"),
    R.RenameNode(node="fc", new_name="classifier"), R.RenameTensor(tensor="flat_out", new_name="flat"),
    R.ReplaceNode(node="block1.relu", op="LeakyRelu", attributes={"alpha": 0.2}),
    R.AddOutputs(tensors=("block1.relu_out",)), R.RemoveNode(node="block1.bn"),
    R.ExtractSubgraph(inputs=("block1.relu_out",), outputs=("residual_out",)),
]
_MODEL = load_model(conv_bn_relu_model())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_POOL), min_size=1, max_size=6))
def test_random_edit_sequences_undo_to_the_original_bytes(edits: list[R.Edit]) -> None:
    s = Session(_MODEL)
    original = model_bytes(s.model)
    applied = 0
    for e in edits:
        before = model_bytes(s.model)
        try:
            s.apply(e)
            applied += 1
        except WorkbenchError:
            assert model_bytes(s.model) == before  # a refused edit leaves the state untouched
    final = model_bytes(s.model)
    assert s.position == applied
    while s.can_undo:
        s.undo()
    assert model_bytes(s.model) == original
    while s.can_redo:
        s.redo()
    assert model_bytes(s.model) == final
    replay = Session(_MODEL, recipe=s.recipe)
    assert model_bytes(replay.model) == final


def test_quantize_edit_scales_travel_with_the_saved_recipe(tmp_path, cli_path) -> None:
    """Scales live in the cache dir (keyed by digest), are copied beside a saved recipe, and replay from the CLI."""
    import os
    import subprocess

    from workbench.calibration import calibrate
    from workbench.graph import SAMPLES_DIR

    s = Session("digits_cnn", cache_dir=tmp_path / "session_cache")
    s.apply(R.FuseBatchNorm())
    scales = calibrate(s.model, SAMPLES_DIR / "digits_calib.npz", method="max")
    digest = scales.save(s.cache_dir)
    s.apply(R.Quantize(method="max", scales=digest))
    assert "QuantizeLinear" in {n.op_type for n in s.model.graph.node}
    s.save(tmp_path / "recipes" / "q.json")
    assert (tmp_path / "recipes" / "q.cache" / "scales" / f"{digest}.json").is_file()
    exported = s.export(tmp_path / "session_q.onnx")
    out = tmp_path / "cli_q.onnx"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "empty_cache")}  # only the recipe's cache can help
    proc = subprocess.run([str(cli_path), "edit", str(SAMPLES_DIR / "digits_cnn.onnx"),
                           str(tmp_path / "recipes" / "q.json"), "-o", str(out)],
                          capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == exported.read_bytes()
    again = Session.load(tmp_path / "recipes" / "q.json")
    assert again.cache_dir == tmp_path / "recipes" / "q.cache" and model_bytes(again.model) == exported.read_bytes()


def test_external_data_model_session_exports_a_self_contained_copy(tmp_path) -> None:
    from tests.models import external_data_model

    path = external_data_model(tmp_path / "src")
    s = Session(path)
    s.apply(R.InsertNode(tensor="logits", op="Softmax", name="probs", attributes={"axis": 1}))
    out = s.export(tmp_path / "out" / "edited.onnx")
    assert not list((tmp_path / "out").glob("*.data"))  # small model: weights inline, nothing dangling
    reloaded = load_model(out)
    feeds = random_feeds(reloaded)
    probs = OrtEngine(reloaded).run(feeds)["logits"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (tmp_path / "src" / "external.onnx.data").is_file()
    assert s.recipe.model.sha256 != sha256_file(path)  # the pin covers the weights file too
    s.save(tmp_path / "src" / "r.json")
    data = tmp_path / "src" / "external.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # someone retrained: same .onnx file, different weights
    data.write_bytes(bytes(raw))
    with pytest.raises(RecipeError, match="sha256"):
        Session.load(tmp_path / "src" / "r.json")


_UNNAMED = unnamed_nodes_model()
_POOL_UNNAMED = [
    R.BypassNode(node="dup"), R.BypassNode(node="Sigmoid_3"), R.RemoveIdentity(), R.RemoveDeadNodes(),
    R.InsertNode(tensor="a", op="Tanh"), R.RenameTensor(tensor="b", new_name="bb"),
    R.ReplaceNode(node="Relu_0", op="LeakyRelu", attributes={"alpha": 0.3}), R.SetShapes(shapes={"input": (3, 4)}),
    R.SetShapes(shapes={"input": ("N", 4)}), R.AddOutputs(tensors=("c",)), R.RemoveNode(node="dup_1"),
    R.RemoveNode(node="dup_1", drop_outputs=True), R.ExtractSubgraph(inputs=("a",), outputs=("c",)),
    R.RenameNode(node="last", new_name="final"),
]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_POOL_UNNAMED), min_size=1, max_size=6))
def test_random_edits_on_unnamed_nodes_replay_and_undo(edits: list[R.Edit]) -> None:
    s = Session(_UNNAMED)
    original = model_bytes(s.model)
    for e in edits:
        try:
            s.apply(e)
        except WorkbenchError:
            pass
    final = model_bytes(s.model)
    feeds = random_feeds(s.model, dims={"N": 2})
    OrtEngine(s.model).run(feeds)  # every accepted edit leaves a model ONNX Runtime runs
    assert model_bytes(Session(_UNNAMED, recipe=s.recipe).model) == final
    s.goto(0)
    assert model_bytes(s.model) == original
