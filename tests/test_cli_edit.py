"""`workbench edit`: a recipe saved from a Session replays from the CLI to byte-identical ONNX."""

from __future__ import annotations

import json
import subprocess

import onnx

from tests.models import conv_bn_relu_model, dynamic_model
from workbench import recipe as R
from workbench.cli import main
from workbench.session import Session


def test_cli_replays_session_recipe_byte_identically(tmp_path, cli_path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save_model(conv_bn_relu_model(), src)
    s = Session(src)
    for e in (R.FoldConstants(), R.FuseBatchNorm(), R.BypassNode(node="block2.relu"),
              R.InsertNode(tensor="logits", op="Softmax", name="probs", attributes={"axis": 1})):
        s.apply(e)
    s.save(tmp_path / "recipe.json")
    exported = s.export(tmp_path / "session.onnx")
    out = tmp_path / "cli.onnx"
    proc = subprocess.run([str(cli_path), "edit", str(src), str(tmp_path / "recipe.json"), "-o", str(out), "--json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["output"] == str(out) and result["edits"] == 4
    assert result["nodes_before"] == 13 and result["nodes_after"] == 10
    assert out.read_bytes() == exported.read_bytes()


def test_cli_template_and_errors(tmp_path, capsys) -> None:
    src = tmp_path / "dyn.onnx"
    onnx.save_model(dynamic_model(), src)
    template = tmp_path / "t.json"
    template.write_text(R.Recipe(edits=(R.SetShapes(shapes={"input": (1, 3, 16, 16)}),)).to_json())
    assert main(["edit", str(src), str(template), "-o", str(tmp_path / "o.onnx"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    out = onnx.load(result["output"])
    assert [d.dim_value for d in out.graph.output[0].type.tensor_type.shape.dim] == [1, 2, 16, 16]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1, "edits": [{"kind": "bypass_node", "node": "ghost"}]}))
    assert main(["edit", str(src), str(bad), "-o", str(tmp_path / "o2.onnx"), "--json"]) == 1
    err = json.loads(capsys.readouterr().out)
    assert "no node named 'ghost'" in err["error"] and err["hint"]
    assert not (tmp_path / "o2.onnx").exists()

    source = src.read_bytes()
    assert main(["edit", str(src), str(template), "-o", str(src), "--json"]) == 1
    err = json.loads(capsys.readouterr().out)
    assert "refusing to overwrite the source model" in err["error"] and src.read_bytes() == source

    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"schema_version": 99, "edits": []}))
    assert main(["edit", str(src), str(newer), "-o", str(tmp_path / "o3.onnx"), "--json"]) == 1
    assert "newer" in json.loads(capsys.readouterr().out)["error"]


def test_cli_inline_kinds_are_a_template(tmp_path, capsys) -> None:
    src = tmp_path / "m.onnx"
    onnx.save_model(conv_bn_relu_model(), src)
    out = tmp_path / "clean.onnx"
    assert main(["edit", str(src), "fold_constants,fuse_batchnorm,remove_identity", "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["applied"] == ["fold_constants", "fuse_batchnorm", "remove_identity"]
    session = Session(src, recipe=R.Recipe(edits=(R.FoldConstants(), R.FuseBatchNorm(), R.RemoveIdentity())))
    assert out.read_bytes() == session.export(tmp_path / "session.onnx").read_bytes()
    assert main(["edit", str(src), "fold_constants,bypass_node", "-o", str(out), "--json"]) == 1
    err = json.loads(capsys.readouterr().out)  # bypass_node needs a node: not a bare kind, so not inline
    assert "cannot read recipe fold_constants,bypass_node" in err["error"] and "fuse_batchnorm" in err["hint"]
