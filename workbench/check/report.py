"""The check's report (:class:`CheckReport`, the CLI keys and more) and the cancelled-check error."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import BuildError

if TYPE_CHECKING:
    import onnx

__all__ = ["CheckCancelled", "CheckReport", "RECIPE"]

class CheckCancelled(BuildError):
    """The check was cancelled (its ``cancel`` was set before it finished): there is no report."""


RECIPE = '{"schema_version": 1, "edits": [{"kind": "%s"}]}'


@dataclass
class CheckReport:
    """The CLI keys (``parsable``, ``buildable``, ``unsupported``, ``errors``, ``suggestions``) and more."""

    model: str
    backend: str | None
    version: str | None
    parsable: bool | None
    buildable: bool | None
    unsupported: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    crashed: dict[str, Any] | None = None
    profiles: list[dict[str, Any]] = field(default_factory=list)
    derived_profiles: list[str] = field(default_factory=list)
    nodes: int = 0
    supported_nodes: int | None = None
    build_seconds: float | None = None
    layers: int | None = None
    io: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    builder_errors: list[str] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    repaired: dict[str, Any] | None = None
    repaired_model: onnx.ModelProto | None = field(default=None, repr=False, compare=False)  # not in the JSON

    @property
    def ok(self) -> bool:
        """Parsed and built."""
        return bool(self.parsable and self.buildable)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON types."""
        return json.loads(json.dumps({f.name: getattr(self, f.name) for f in fields(self) if f.name != "repaired_model"}))


