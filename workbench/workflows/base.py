"""What every workflow shares: one progress protocol, one cancel type, and typed results with ``to_dict()``."""

from __future__ import annotations

from ..cancel import Cancel, Progress, cancelled, report
from ..result import Result, jsonable

__all__ = ["Cancel", "Progress", "Result", "cancelled", "jsonable", "report"]
