"""The one shape-spec grammar (workbench.specs): what the CLI's --shapes, the Edit tab's set-shapes box and the
repair panel's shapes box read alike."""

from __future__ import annotations

import pytest
from models import dynamic_model

from workbench.backends.trt_profiles import parse_shapes
from workbench.errors import DataError
from workbench.specs import ShapeSpec, format_dims, parse_specs
from workbench.ui.edit_tab import parse_shapes as edit_shapes
from workbench.workflows.model import parse_static_shapes


def test_items_ranges_and_symbols() -> None:
    assert parse_specs("a:1x3x8x8,2x3x8x8,4x3x8x8; b:5") == (
        ShapeSpec("a", ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))), ShapeSpec("b", ((5,),)))
    assert parse_specs("a:1x3x8x8,2x3x8x8,4x3x8x8")[0].shape == (2, 3, 8, 8)  # the opt shape of a range
    assert parse_specs(["x:?xN", "y:2"], symbolic=True) == (ShapeSpec("x", ((None, "N"),)), ShapeSpec("y", ((2,),)))
    assert format_dims((1, None, "W")) == "1x?xW"
    assert parse_specs("1x3", default_name="x") == (ShapeSpec("x", ((1, 3),)),)
    assert parse_specs(None) == ()


@pytest.mark.parametrize("spec, kwargs, words", [
    ("1x3", {}, "has no input name"),
    ("x:1x3,1x4", {}, "one shape or three"),
    ("x:1x3,1x4,1x5", {"ranges": False}, "one shape per input"),
    ("x:1xN", {}, "'1xN' is not a shape"),  # symbols only where allowed
    ("x:1x3 x:1x4", {}, "given twice"),
    ("1x3 2x4", {"default_name": "x"}, "has no input name"),  # a bare shape only as the one item
])
def test_bad_specs_name_the_item(spec: str, kwargs: dict, words: str) -> None:
    with pytest.raises(DataError, match=words) as err:
        parse_specs(spec, **kwargs)
    assert err.value.hint


def test_the_cli_the_edit_tab_and_the_repair_panel_read_one_grammar() -> None:
    spec = "input:2x3x16x16"
    (profile,) = parse_shapes(spec, dynamic_model())
    assert profile.opt == edit_shapes(spec)["input"] == parse_static_shapes(spec, ("input",))["input"] == (2, 3, 16, 16)
    for read in (edit_shapes, lambda s: parse_static_shapes(s, ("input",))):  # a range is for profiles only
        with pytest.raises(DataError, match="one shape per input"):
            read("input:1x3x8x8,2x3x8x8,4x3x8x8")
