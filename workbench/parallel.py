"""Thread workers for batch loops whose work runs in native code that releases the GIL (ONNX Runtime's
``run``): each worker thread runs whole batches, so the cores work on different batches instead of sharing
one operator (which scales poorly for small tensors)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .errors import DataError

__all__ = ["ordered_map", "resolve_workers", "threads_per_worker"]

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(workers: int | None) -> int:
    """``None`` = one worker per core, at most 4 (each holds its own slice of a batch and ONNX Runtime buffers);
    otherwise ``workers`` (at least 1)."""
    if workers is None:
        return max(1, min(os.cpu_count() or 1, 4))
    if int(workers) < 1:
        raise DataError(f"workers must be >= 1 (got {workers})", hint="pass 1 for no threads, or leave it unset")
    return int(workers)


def threads_per_worker(workers: int) -> int | None:
    """ONNX Runtime intra-op threads for each session when ``workers`` threads call it concurrently
    (``None``: ONNX Runtime's own default, for a single worker)."""
    return None if workers <= 1 else max(1, (os.cpu_count() or 1) // workers)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, results in input order, at most ``workers + 1`` items in
    flight (so memory stays bounded for a long iterable). ``items`` is consumed on the caller's thread; an
    exception in ``fn`` is raised from the iteration at that item's place. With ``workers == 1`` no thread
    is started."""
    if workers <= 1:
        yield from map(fn, items)
        return
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="workbench") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
