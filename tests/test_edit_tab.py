"""Edit tab, headless: set widget values, click buttons, assert widget and session state."""

from __future__ import annotations

import json

import onnx
import pytest

from tests.models import conv_bn_relu_model, dynamic_model
from workbench.errors import DataError, EditError
from workbench.graph import model_bytes
from workbench.plots.graph_data import MISSING
from workbench.session import Session
from workbench.ui.common import Status
from workbench.ui.edit_tab import EditTab, build_edits, match_nodes, parse_shapes


@pytest.fixture
def tab(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save_model(conv_bn_relu_model(), src)
    return EditTab(Session(src, cache_dir=tmp_path / "cache"), Status())


def test_select_by_pattern_preview_apply_undo_redo(tab: EditTab) -> None:
    s = tab.session
    tab.pattern.value = "BatchNormalization"
    tab.select_button.click()
    assert tab.selection == ["block1.bn", "block2.bn", "block3.bn"]
    assert tab.count.value == "3 of 13 nodes selected"
    tab.pattern.value = "block2.*"
    tab.select_button.click()
    assert tab.selection == ["block2.conv", "block2.bn", "block2.relu"]

    tab.select(["block2.relu"])
    tab.action.value = "bypass node"
    tab.preview_button.click()
    assert tab.last_preview is not None
    assert tab.last_preview.removed == ("block2.relu",) and tab.last_preview.nodes_after == 12
    assert "block2.relu" in tab.preview_html.value and not s.can_undo  # preview applies nothing
    tab.apply_button.click()
    assert tab.status.state == "ok" and s.position == 1
    assert tab.status.message == "apply bypass_node(node='block2.relu', input_index=0): 0 nodes added, 1 removed, " \
        "1 changed; 12 nodes"
    assert tab.last_change.removed == ("block2.relu",) and tab.last_change.changed == ("block3.conv",)
    assert json.loads(tab.recipe_json.value)["edits"] == [{"kind": "bypass_node", "node": "block2.relu",
                                                          "input_index": 0}]
    assert "block2.relu" not in [v for _, v in tab.nodes.options]
    assert tab.undo_button.disabled is False and tab.redo_button.disabled is True

    tab.action.value = "fuse BatchNorm into Conv/Gemm"
    tab.apply_button.click()
    assert len(json.loads(tab.recipe_json.value)["edits"]) == 2
    assert tab.history.options[-1][0].startswith("▶ 2. fuse_batchnorm")
    tab.undo_button.click()
    tab.undo_button.click()
    assert model_bytes(s.model) == model_bytes(s.original) and tab.undo_button.disabled
    assert tab.last_change.added == ("block2.relu",)
    tab.redo_button.click()
    assert s.position == 1 and json.loads(tab.recipe_json.value)["edits"][0]["kind"] == "bypass_node"


def test_bad_input_shows_error_and_keeps_state(tab: EditTab) -> None:
    s = tab.session
    tab.action.value = "bypass node"
    tab.select([])
    tab.apply_button.click()
    assert tab.status.state == "error" and "needs at least one selected node" in tab.status.message
    tab.select(["residual.add"])
    tab.action.value = "replace op / attributes"
    tab.op.value = "NoSuchOp"
    tab.apply_button.click()
    assert tab.status.state == "error" and tab.status.hint and s.position == 0
    tab.action.value = "extract subgraph (inputs -> outputs)"
    tab.inputs.value = "block1.relu_out"
    tab.outputs.value = "not_a_tensor"
    tab.preview_button.click()
    assert "not_a_tensor" in tab.status.message and s.position == 0


def test_save_load_export_from_the_tab(tab: EditTab, tmp_path, cli_path) -> None:
    import subprocess

    s = tab.session
    tab.action.value = "fold constants"
    tab.apply_button.click()
    tab.select(["fc"])
    tab.action.value = "insert node after output"
    tab.op.value = "Softmax"
    tab.name.value = "probs"
    tab.attributes.value = '{"axis": 1}'
    tab.apply_button.click()
    assert tab.status.state == "ok", tab.status.message
    assert s.model.graph.node[-1].name == "probs"
    tab.recipe_path.value = str(tmp_path / "r.json")
    tab.save_button.click()
    tab.export_path.value = str(tmp_path / "tab.onnx")
    tab.export_button.click()
    assert tab.status.state == "ok"
    out = tmp_path / "cli.onnx"
    proc = subprocess.run([str(cli_path), "edit", str(s.source_path), str(tmp_path / "r.json"), "-o", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (tmp_path / "tab.onnx").read_bytes()  # the tab's recipe replays to the same bytes

    tab.undo_button.click()
    tab.undo_button.click()
    tab.load_button.click()  # the saved recipe comes back as one undoable step
    assert [e.kind for e in s.recipe.edits] == ["fold_constants", "insert_node"] and s.position == 1
    assert model_bytes(s.model) == out.read_bytes()


def test_form_helpers() -> None:
    rows = [{"name": "conv1", "op": "Conv"}, {"name": "relu1", "op": "Relu"}, {"name": "conv2", "op": "Conv"}]
    assert match_nodes(rows, "conv") == ["conv1", "conv2"]
    assert match_nodes(rows, "relu") == ["relu1"]
    assert match_nodes(rows, "*1") == ["conv1", "relu1"]
    assert parse_shapes("input:1x3xHx? other:?x8") == {"input": (1, 3, "H", None), "other": (None, 8)}
    with pytest.raises(DataError, match="has no input name"):
        parse_shapes("1x3")
    with pytest.raises(DataError, match="one shape per input"):  # the SPEC grammar: a comma makes a range
        parse_shapes("input:1x3,1x4")
    with pytest.raises(EditError, match="not valid JSON"):
        build_edits("replace op / attributes", ["a"], {"attributes": "{alpha"})


def test_set_shapes_action_on_dynamic_model() -> None:
    tab = EditTab(Session(dynamic_model()), Status())
    tab.action.value = "set input shapes"
    assert tab.shapes.layout.display is None and tab.op.layout.display == "none"
    tab.shapes.value = "input:1x3x32x32"
    tab.apply_button.click()
    assert tab.status.state == "ok", tab.status.message
    assert tab.session.summary().outputs[0].shape == (1, 2, 32, 32)


def test_graph_selects_the_selection_and_colours_the_last_change(tab: EditTab) -> None:
    assert tab.show_graph.value is True and tab.graph.multiselect
    assert tab.graph.selected == []
    tab.select(["block1.conv", "fc"])
    assert tab.graph.selected == ["block1.conv", "fc"]
    # a click on fc in the browser toggles it: the front end sends the new selection
    tab.graph.set_state({"selected": ["block1.conv"]})
    assert tab.selection == ["block1.conv"]
    tab.action.value = "fuse BatchNorm into Conv/Gemm"
    tab.apply_button.click()
    drawn = [n["id"] for n in tab.graph.graph["nodes"] if not n["id"].startswith(("in:", "out:"))]
    assert len(drawn) == 10 and "block1.bn" not in drawn  # redrawn for the edited model
    overlay = tab.graph.overlay
    assert overlay["title"] == "last change" and [x[0] for x in overlay["legend"]] == ["changed"]
    assert sorted(overlay["colors"]) == ["block1.conv", "block2.conv", "block3.conv"]  # absorbed a BatchNorm
    assert tab.graph.colour_of("fc") == MISSING
    tab.show_graph.value = False
    assert tab.graph.graph == {} and tab.graph.layout.display == "none"
    tab.show_graph.value = True
    assert len(tab.graph.graph["nodes"]) == 12 and tab.graph.selected == ["block1.conv"]


def test_history_list_jumps_to_a_step(tab: EditTab) -> None:
    s = tab.session
    for action in ("fold constants", "fuse BatchNorm into Conv/Gemm", "remove Identity/Dropout"):
        tab.action.value = action
        tab.apply_button.click()
    assert s.position == 3 and len(tab.history.options) == 4
    tab.history.value = 1  # the user clicks "1. fold_constants"
    assert s.position == 1 and [e.kind for e in s.recipe.edits] == ["fold_constants"]
    assert tab.history.options[1][0].startswith("▶") and tab.redo_button.disabled is False
    assert "BatchNormalization" in {n.op_type for n in s.model.graph.node}
    tab.history.value = 3
    assert s.position == 3 and tab.last_change.action == "redo"
