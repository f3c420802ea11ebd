"""Wall time spent in MLflow calls, by call: the benchmark's "MLflow share".

``timed`` wraps a tracking function; ``mlflow_seconds`` adds up the time spent in
them (nested calls counted once, drawing figures left out by their callers).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


_SECONDS: dict[str, float] = {}
_CALLS: dict[str, int] = {}
_DEPTH = [0]


@contextlib.contextmanager
def timing(what: str) -> Iterator[None]:
    """Count the block's wall time as ``what`` (outermost block only, so nesting counts once)."""
    _DEPTH[0] += 1
    start = time.perf_counter()
    try:
        yield
    finally:
        _DEPTH[0] -= 1
        if _DEPTH[0] == 0:
            _SECONDS[what] = _SECONDS.get(what, 0.0) + time.perf_counter() - start
            _CALLS[what] = _CALLS.get(what, 0) + 1


def timed(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with timing(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper


def mlflow_seconds() -> float:
    """Seconds spent in this module's calls (less drawing figures) since ``reset_overhead``."""
    return sum(_SECONDS.values())


def overhead_by_call() -> dict[str, tuple[float, int]]:
    """Seconds and number of calls per kind (``pipeline_run``, ``child_run``, ``end_run``, ...)."""
    return {what: (seconds, _CALLS[what]) for what, seconds in _SECONDS.items()}


def reset_overhead() -> None:
    """Start counting afresh."""
    _SECONDS.clear()
    _CALLS.clear()
