"""A small immutable table: the one shape results take between the core, the plots and the UI.

Standard library only. Rows are tuples in column order; ``records()`` gives dictionaries.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Table"]


@dataclass(frozen=True)
class Table:
    """Columns and rows of plain values (str, int, float, bool, None, lists of str)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def __post_init__(self) -> None:
        width = len(self.columns)
        for i, row in enumerate(self.rows):
            if len(row) != width:
                raise ValueError(f"row {i} has {len(row)} values for {width} columns {self.columns}")

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Table:
        """A table from dicts; ``columns`` default to every key, in first-seen order (a missing key is None)."""
        records = list(records)
        if columns is None:
            seen: dict[str, None] = {}
            for r in records:
                seen.update(dict.fromkeys(r))
            columns = list(seen)
        return cls(tuple(columns), tuple(tuple(r.get(c) for c in columns) for r in records))

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        """The values of one column, in row order."""
        i = self._index(name)
        return [row[i] for row in self.rows]

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column."""
        return [dict(zip(self.columns, row)) for row in self.rows]

    def where(self, predicate: Callable[[dict[str, Any]], bool]) -> Table:
        """The rows whose record ``predicate`` accepts."""
        return Table(self.columns, tuple(r for r, rec in zip(self.rows, self.records()) if predicate(rec)))

    def sort_by(self, name: str, *, descending: bool = False) -> Table:
        """The rows sorted by one column, None values last."""
        i = self._index(name)
        key = (lambda r: (r[i] is None, r[i])) if not descending else (lambda r: (r[i] is not None, r[i]))
        return Table(self.columns, tuple(sorted(self.rows, key=key, reverse=descending)))

    def head(self, n: int) -> Table:
        """The first ``n`` rows."""
        return Table(self.columns, self.rows[:n])

    def to_json(self) -> str:
        """The records as a JSON list."""
        return json.dumps(self.records())

    def _index(self, name: str) -> int:
        try:
            return self.columns.index(name)
        except ValueError as exc:
            raise KeyError(f"no column {name!r}; columns are {list(self.columns)}") from exc

    def _repr_html_(self, limit: int = 200) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in self.rows[:limit]
        )
        more = f"<p>{len(self.rows) - limit} more rows</p>" if len(self.rows) > limit else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return "" if v is None else str(v)
