"""Cancellation tokens and progress callbacks. Every long call takes ``cancel``: ``None``, an Event-like object
(``is_set()``) or a callable returning True once the user asked to stop; and ``progress``: a :class:`Progress`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, Union, runtime_checkable

__all__ = ["Cancel", "Progress", "cancelled", "report"]


@runtime_checkable
class _EventLike(Protocol):
    def is_set(self) -> bool: ...


Cancel = Union[_EventLike, Callable[[], bool], None]  # noqa: UP007


def cancelled(cancel: Cancel) -> bool:
    """True when ``cancel`` says stop."""
    if cancel is None:
        return False
    if isinstance(cancel, _EventLike):
        return bool(cancel.is_set())
    return bool(cancel())


class Progress(Protocol):
    """Progress callback: ``done`` of ``total`` (any units; ``total`` 0 when unknown), with an optional phase."""

    def __call__(self, done: float, total: float, phase: str = "") -> None:
        """Say that ``done`` of ``total`` is done, in ``phase``."""


def report(progress: Progress | None, done: float, total: float, phase: str = "") -> None:
    """Call ``progress`` when one was given."""
    if progress is not None:
        progress(done, total, phase)
