"""Shape SPEC parsing, validation against the model, derived default profiles (tensorrt engineer)."""

from __future__ import annotations

import pytest
from models import conv_bn_relu_model, dynamic_model

from workbench.backends.trt_profiles import (
    derive_profile,
    example_spec,
    format_spec,
    model_inputs,
    parse_shapes,
    resolve_profiles,
)
from workbench.errors import DataError
from workbench.graph import load_model
from workbench.recipe import ShapeProfile


@pytest.fixture(scope="module")
def dyn():
    return load_model(dynamic_model())


def test_fixed_and_min_opt_max_specs(dyn):
    (p,) = parse_shapes("input:1x3x32x32,2x3x64x64,4x3x128x128", dyn)
    assert p == ShapeProfile("input", (1, 3, 32, 32), (2, 3, 64, 64), (4, 3, 128, 128))
    (q,) = parse_shapes(["input:2x3x16x16"], dyn)
    assert q.min == q.opt == q.max == (2, 3, 16, 16)
    assert format_spec(p) == "input:1x3x32x32,2x3x64x64,4x3x128x128"
    assert format_spec(q) == "input:2x3x16x16"


@pytest.mark.parametrize("spec, words", [
    ("nope:1x3x8x8", ["no input 'nope'", "input"]),
    ("input:1x3x8", ["rank 3", "rank 4"]),
    ("input:1x4x8x8", ["dim 1 is fixed to 3"]),
    ("input:1x3x8x8,1x3x4x4,1x3x16x16", ["min 8, opt 4", "min <= opt <= max"]),
    ("input:1x3x8x8,1x3x8x8", ["one shape or three"]),
    ("input:1x3xAx8", ["'1x3xAx8' is not a shape"]),
    ("1x3x8x8", ["no input name"]),
    ("input:0x3x8x8", ["dims must be >= 1"]),
    ("input:1x3x8x8 input:1x3x8x8", ["given twice"]),
])
def test_bad_specs_raise_data_error_naming_the_problem(dyn, spec, words):
    with pytest.raises(DataError) as err:
        parse_shapes(spec, dyn)
    for w in words:
        assert w in err.value.message
    assert err.value.hint


def test_derived_defaults_cover_every_dynamic_dim_and_keep_static_dims(dyn):
    info = model_inputs(dyn)["input"]
    assert info.shape[1] == 3 and not isinstance(info.shape[0], int)
    p, note = derive_profile(info)
    assert p.min[1] == p.opt[1] == p.max[1] == 3  # the static channel dim is kept
    assert (p.min[0], p.opt[0], p.max[0]) == (1, 1, 8)  # batch
    assert (p.min[2], p.max[2]) == (32, 1024)
    assert "input" in note and f"--shapes {format_spec(p)}" in note
    assert example_spec(dyn) == format_spec(p)


def test_resolve_keeps_given_profiles_and_adds_nothing_for_static_models(dyn):
    given = parse_shapes("input:1x3x8x8,1x3x16x16,2x3x32x32", dyn)
    r = resolve_profiles(dyn, given)
    assert r.profiles == given and r.derived == () and r.notes == ()
    r2 = resolve_profiles(dyn)
    assert r2.derived == ("input",) and len(r2.notes) == 1
    static = load_model(conv_bn_relu_model())
    assert resolve_profiles(static).profiles == ()
    assert example_spec(static) == ""
