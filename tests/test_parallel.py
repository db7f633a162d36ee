"""parallel: ordered results, bounded work in flight, errors at their place."""

from __future__ import annotations

import threading
import time

import pytest

from workbench.errors import DataError
from workbench.parallel import ordered_map, resolve_workers, threads_per_worker


def test_results_come_back_in_input_order_from_several_threads():
    names = set()

    def slow_first(i: int) -> int:
        names.add(threading.current_thread().name)
        time.sleep(0.02 if i % 3 == 0 else 0.0)  # early items finish last
        return i * i

    assert list(ordered_map(slow_first, range(20), 3)) == [i * i for i in range(20)]
    assert len(names) > 1 and all(n.startswith("workbench") for n in names)


def test_at_most_workers_plus_one_items_are_taken_before_the_first_result():
    taken = []

    def items():
        for i in range(100):
            taken.append(i)
            yield i

    it = ordered_map(lambda i: i, items(), 2)
    assert next(it) == 0
    assert len(taken) == 3
    it.close()  # stopping early leaves no work running
    assert len(taken) == 3


def test_an_error_is_raised_at_its_item():
    def fail_on_3(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        return i

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for r in ordered_map(fail_on_3, range(10), 2):
            got.append(r)
    assert got == [0, 1, 2]


def test_one_worker_runs_on_the_callers_thread():
    caller = threading.current_thread().name
    assert list(ordered_map(lambda i: threading.current_thread().name, range(3), 1)) == [caller] * 3


def test_worker_counts():
    assert resolve_workers(3) == 3
    assert 1 <= resolve_workers(None) <= 4
    with pytest.raises(DataError, match="workers must be >= 1"):
        resolve_workers(0)
    assert threads_per_worker(1) is None
    assert threads_per_worker(64) == 1
