"""Atomic file writes: a temp file in the target's folder, then ``os.replace``. Nothing half-written."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_json", "read_json", "cache_root", "give_mode"]


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (``os.umask`` set-and-restore elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_mode(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give the temp file ``tmp`` the mode a plain ``open(path, "w")`` would leave: the existing file's mode when
    ``path`` exists, else 0666 less the umask (``mkstemp`` creates 0600, which would hide files from a group)."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (readers see the old file or the whole new one), with the mode a plain
    ``open()`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        give_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value in a UTF-8 file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cache_root() -> Path:
    """Where derived artefacts live by default: ``$XDG_CACHE_HOME/onnx-trt-workbench`` (``~/.cache`` if unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onnx-trt-workbench"
