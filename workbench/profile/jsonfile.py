"""Reading a JSON artefact (a trtexec export, a saved timing table) with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = ["load_json"]


def load_json(source: Any, what: str) -> tuple[Any, str]:
    """(parsed JSON, where it came from): ``source`` is a path, or already parsed data (a dict or list)."""
    if isinstance(source, (dict, list)):
        return source, f"the given {what}"
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{what} file '{path}' does not exist",
                        hint="pass the file trtexec wrote (--exportLayerInfo=G.json / --exportProfile=P.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} file '{path}' is not valid JSON ({exc})",
                        hint="re-export it with trtexec; an interrupted run leaves a truncated file") from exc
