"""Recipe: JSON round trips, canonical digests, templates, and errors for unknown or newer input."""

from __future__ import annotations

import json

import pytest

from workbench import recipe as R
from workbench.errors import RecipeError


def _full() -> R.Recipe:
    return R.Recipe(
        model=R.ModelRef(path="models/m.onnx", sha256="ab" * 32),
        node_names={"0": "Relu_0", "3": "Sigmoid_3"},
        edits=(
            R.FoldConstants(), R.FuseBatchNorm(), R.RemoveNode(node="n1", drop_outputs=True),
            R.BypassNode(node="n2", input_index=1),
            R.ReplaceNode(node="n3", op="LeakyRelu", attributes={"alpha": 0.1, "old": None}),
            R.InsertNode(tensor="t", op="Relu", name="r"), R.ExtractSubgraph(inputs=("a",), outputs=("b", "c")),
            R.SetShapes(shapes={"x": (1, "H", None)}), R.AddOutputs(tensors=("t",)),
            R.ConvertPrecision(precision="bf16", keep=("n4",)), R.Quantize(exclude=("n5",), scales="cafe"),
        ),
        calibration=R.CalibrationSettings(method="percentile", percentile=99.9, samples=64, data="calib.npz"),
        build=R.BuildSettings(profiles=(R.ShapeProfile("x", (1, 3), (4, 3), (8, 3)),), opt_level=5),
    )


def test_every_edit_kind_round_trips() -> None:
    recipe = _full()
    again = R.Recipe.from_json(recipe.to_json())
    assert again == recipe
    assert again.to_json() == recipe.to_json()
    kinds = {e.kind for e in recipe.edits}
    for kind, cls in R.EDIT_KINDS.items():
        assert cls.kind == kind and R.edit_from_dict(cls().to_dict()) == cls()
    assert kinds <= set(R.EDIT_KINDS)


def test_json_shape_follows_the_contract() -> None:
    data = json.loads(_full().to_json())
    assert data["schema_version"] == R.SCHEMA_VERSION == 1
    assert data["model"] == {"path": "models/m.onnx", "sha256": "ab" * 32}
    assert data["edits"][0] == {"kind": "fold_constants"}
    assert data["edits"][7] == {"kind": "set_shapes", "shapes": {"x": [1, "H", None]}}
    assert data["node_names"] == {"0": "Relu_0", "3": "Sigmoid_3"}


def test_digest_is_canonical_and_ignores_the_model_path() -> None:
    a = _full()
    b = R.Recipe.from_dict(json.loads(a.to_json()))
    assert a.digest() == b.digest()
    moved = a.replace(model=R.ModelRef(path="/elsewhere/m.onnx", sha256="ab" * 32))
    assert moved.digest() == a.digest()
    other_model = a.replace(model=R.ModelRef(path="models/m.onnx", sha256="cd" * 32))
    assert other_model.digest() != a.digest()
    assert a.with_edit(R.RemoveIdentity()).digest() != a.digest()
    # key order in the file does not matter
    shuffled = json.dumps(dict(reversed(list(json.loads(a.to_json()).items()))))
    assert R.Recipe.from_json(shuffled).digest() == a.digest()


def test_template_has_no_model() -> None:
    t = R.Recipe(edits=(R.FoldConstants(), R.FuseBatchNorm(), R.RemoveIdentity()))
    assert t.model is None and "model" not in json.loads(t.to_json())
    assert R.Recipe.from_json('{"schema_version": 1, "edits": [{"kind": "fold_constants"}]}').model is None


@pytest.mark.parametrize("text, match, hint", [
    ('{"schema_version": 1, "edits": [{"kind": "explode"}]}', "unknown edit kind 'explode'", "fold_constants"),
    ('{"schema_version": 2, "edits": []}', "schema_version 2 is newer", "upgrade"),
    ('{"edits": []}', "schema_version", "schema_version"),
    ('{"schema_version": 1, "edits": [{"kind": "remove_node", "nod": "x"}]}', r"unknown fields \['nod'\]", "node"),
    ('{"schema_version": 1, "edits": [{"kind": "bypass_node", "node": "x", "input_index": "1"}]}',
     r"edits\[0\].input_index", "int"),
    ('{"schema_version": 1, "edits": [], "extra": 1}', r"unknown keys \['extra'\]", "recipe has only"),
    ('{"schema_version": 1, "edits": {}}', "'edits' must be a list", "edits"),
    ('{"schema_version": 1, ', "not valid JSON", "JSON"),
    ('[1, 2]', "a recipe is a JSON object", "schema_version"),
])
def test_bad_recipes_raise_recipe_error(text: str, match: str, hint: str) -> None:
    with pytest.raises(RecipeError, match=match) as info:
        R.Recipe.from_json(text, where="r.json")
    assert info.value.message.startswith("r.json") and hint in info.value.hint
