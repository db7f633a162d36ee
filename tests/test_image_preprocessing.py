"""Image-folder preprocessing options real models need (workbench.data + recipe.Preprocessing + CLI flags).

The smallest forms of what the corpus found: M-LSD takes RGB plus a constant 4th channel (``append_channel``),
YOLO-style and orientation models a letterboxed picture (``resize: letterbox``, ``pad``, ``center``),
ImageNet-style classifiers a resize then a centre crop (``crop_from``), some packages another filter
(``resample``). Each is checked against the pixels Pillow gives directly; recipes without them keep their bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from workbench.backends.ort import OrtEngine
from workbench.cli import main as cli_main
from workbench.data import image_array, load_data, preprocessing_for
from workbench.errors import RecipeError
from workbench.recipe import CalibrationSettings, Preprocessing, Recipe

pytestmark = pytest.mark.filterwarnings(r"ignore:only \d+ calibration samples:UserWarning")


def _rgb(w: int, h: int, shift: int = 0):
    from PIL import Image

    x = ((np.arange(h * w * 3).reshape(h, w, 3) * 7 + shift) % 251).astype(np.uint8)
    return Image.fromarray(x, "RGB")


def _folder(path: Path, count: int, w: int, h: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        _rgb(w, h, shift=i).save(path / f"{i:02d}.png")  # PNG: lossless, so pixels compare exactly
    return path


def identity(shape) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="id")], "g",
                          [helper.make_tensor_value_info("x", T.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", T.FLOAT, shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_letterbox_keeps_the_aspect_and_pads_top_left_or_centred() -> None:
    img = _rgb(4, 2)  # 4 wide, 2 high into 4x4: the picture fills 2 rows, the pad the other 2
    pre = Preprocessing(size=(4, 4), resize="letterbox", pad=255, layout="NHWC", scale=1.0)
    top = image_array(img, pre)
    mid = image_array(img, Preprocessing(**{**pre.__dict__, "center": True}))
    want = np.asarray(img, np.float32)
    np.testing.assert_array_equal(top[:2], want)
    np.testing.assert_array_equal(top[2:], 255)
    np.testing.assert_array_equal(mid[1:3], want)
    np.testing.assert_array_equal(mid[[0, 3]], 255)
    # a stretch of the same picture is not a letterbox
    assert not np.array_equal(image_array(img, Preprocessing(size=(4, 4), layout="NHWC", scale=1.0)), top)


def test_crop_from_resizes_then_centre_crops_and_resample_picks_the_filter() -> None:
    from PIL import Image

    img = _rgb(8, 8)
    x = image_array(img, Preprocessing(size=(4, 4), crop_from=(8, 8), layout="NHWC", scale=1.0))
    np.testing.assert_array_equal(x, np.asarray(img, np.float32)[2:6, 2:6])
    big = _rgb(16, 12)  # resized to 8x8 first, then cut
    y = image_array(big, Preprocessing(size=(4, 4), crop_from=(8, 8), layout="NHWC", scale=1.0))
    want = np.asarray(big.resize((8, 8), Image.Resampling.BILINEAR), np.float32)[2:6, 2:6]
    np.testing.assert_array_equal(y, want)
    lanczos = image_array(big, Preprocessing(size=(5, 5), resample="lanczos", scale=1.0))
    np.testing.assert_array_equal(lanczos, np.asarray(big.resize((5, 5), Image.Resampling.LANCZOS),
                                                      np.float32).transpose(2, 0, 1))
    assert not np.array_equal(lanczos, image_array(big, Preprocessing(size=(5, 5), scale=1.0)))
    for bad in ({"crop_from": (2, 8)}, {"resample": "cubic"}, {"resize": "letterbox", "crop_from": (8, 8)},
                {"resize": "squash"}):
        with pytest.raises(RecipeError, match="preprocessing"):
            Preprocessing(size=(4, 4), **bad)
    with pytest.raises(RecipeError, match="without a size"):
        Preprocessing(resize="letterbox")


def test_append_channel_feeds_an_rgb_plus_constant_model_from_a_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "imgs", 3, 10, 6)
    model = identity(["N", 8, 8, 4])  # M-LSD: NHWC, RGB + a constant 1.0 channel
    pre = preprocessing_for(model, append_channel=1.0, mean=(0.5,), std=(0.25,))
    assert pre.layout == "NHWC" and pre.size == (8, 8) and pre.channels == "RGB"  # 4 = 3 + the appended one
    ds = load_data(folder, model, preprocessing=pre)
    x = ds.array("x")
    assert x.shape == (3, 8, 8, 4)
    np.testing.assert_array_equal(x[..., 3], 1.0)  # after the mean/std, not normalised
    rgb = load_data(folder, model, preprocessing=Preprocessing(**{**pre.__dict__, "append_channel": None})).array("x")
    np.testing.assert_array_equal(x[..., :3], rgb)
    np.testing.assert_array_equal(OrtEngine(model).run(ds.batch(0, 3).feeds)["y"], x)
    # without the option, the 4-channel input gets no guessed layout and no rgb-shaped data runs
    assert preprocessing_for(model).size == ()


def test_recipes_keep_their_digest_and_record_the_options_only_when_set() -> None:
    plain = Recipe(calibration=CalibrationSettings(data="imgs", preprocessing=Preprocessing(size=(8, 8))))
    keys = json.loads(plain.to_json())["calibration"]["preprocessing"]
    assert set(keys) == {"kind", "size", "layout", "channels", "scale", "mean", "std", "dtype"}  # as before
    pre = Preprocessing(size=(8, 8), resize="letterbox", center=True, pad=0, resample="bicubic", append_channel=1.0)
    rich = Recipe(calibration=CalibrationSettings(data="imgs", preprocessing=pre))
    saved = json.loads(rich.to_json())["calibration"]["preprocessing"]
    assert {k: saved[k] for k in ("resize", "center", "pad", "resample", "append_channel")} == {
        "resize": "letterbox", "center": True, "pad": 0, "resample": "bicubic", "append_channel": 1.0}
    assert "crop_from" not in saved
    assert Recipe.from_json(rich.to_json()).calibration.preprocessing == pre
    assert rich.digest() != plain.digest()


def test_cli_flags_reach_the_data_and_the_recipe(tmp_path: Path, capsys) -> None:
    w = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g",
                          [helper.make_tensor_value_info("x", T.FLOAT, ["N", 4, 8, 8])],
                          [helper.make_tensor_value_info("y", T.FLOAT, ["N", 2, 6, 6])],
                          [numpy_helper.from_array(w, "w")])
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), src)
    folder = _folder(tmp_path / "imgs", 4, 12, 6)
    recipe = tmp_path / "r.json"
    assert cli_main(["quantize", str(src), "--calib", str(folder), "--append-channel", "1", "--resize", "letterbox",
                     "--center", "--pad", "0", "--resample", "nearest", "-o", str(tmp_path / "q.onnx"),
                     "--recipe-out", str(recipe), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibration"]["samples"] == 4
    pre = Recipe.from_json(recipe.read_text()).calibration.preprocessing
    assert pre == Preprocessing(size=(8, 8), resize="letterbox", center=True, pad=0, resample="nearest",
                                append_channel=1.0)
    assert cli_main(["quantize", str(src), "--calib", str(folder), "--crop-from", "4x4", "--append-channel", "1", "-o",
                     str(tmp_path / "q2.onnx"), "--json"]) == 1
    assert "crop_from [4, 4] smaller than size [8, 8]" in json.loads(capsys.readouterr().out)["error"]
