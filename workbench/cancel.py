"""Cancellation tokens. Every long call takes ``cancel``: ``None``, an Event-like object (``is_set()``)
or a callable returning True once the user asked to stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, Union

__all__ = ["Cancel", "cancelled"]


class _EventLike(Protocol):
    def is_set(self) -> bool: ...


Cancel = Union[_EventLike, Callable[[], bool], None]  # noqa: UP007


def cancelled(cancel: Cancel) -> bool:
    """True when ``cancel`` says stop."""
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set() if is_set is not None else cancel())  # type: ignore[operator]
