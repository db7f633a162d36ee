"""Timing tables on disk: derived artefacts as JSON, keyed by the caller (e.g.
``<cache_dir>/timings/<digest>-<label>.json``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..backends.ort_profile import TIMING_COLUMNS
from ..errors import DataError
from ..fsio import write_json
from ..table import Table
from .jsonfile import load_json
from .tables import check_table

__all__ = ["save_timings", "load_timings"]


def save_timings(table: Table, path: str | os.PathLike[str], **meta: Any) -> Path:
    """Write a timing table (and any JSON-able ``meta``: source, digest, iterations ...) atomically as JSON."""
    check_table(table)
    return write_json(path, {"schema": "workbench-timings/1", "columns": list(table.columns),
                             "rows": [list(r) for r in table.rows], "meta": meta})


def load_timings(path: str | os.PathLike[str]) -> tuple[Table, dict[str, Any]]:
    """Read a table written by :func:`save_timings`: (table, meta)."""
    data, where = load_json(path, "timing table")
    if not isinstance(data, dict) or data.get("schema") != "workbench-timings/1" or \
            tuple(data.get("columns", ())) != TIMING_COLUMNS:
        raise DataError(f"{where} is not a workbench timing table", hint="write it with workbench.profile.save_timings")
    return Table(TIMING_COLUMNS, tuple(tuple(r) for r in data["rows"])), dict(data.get("meta") or {})
