"""Wall time spent in MLflow calls, by call: the benchmark's "MLflow share".

``timed`` wraps a tracking function; ``mlflow_seconds`` adds up the time spent in
them (nested calls counted once, drawing figures left out by their callers), in
every thread; ``mlflow_seconds(main_only=True)`` only the main thread's, which
is what the stage waits for when the driver records in a background thread
(``pipelines.execution.recorder``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


_SECONDS: dict[str, float] = {}
_MAIN_SECONDS: dict[str, float] = {}
_CALLS: dict[str, int] = {}
_LOCAL = threading.local()
_LOCK = threading.Lock()


@contextlib.contextmanager
def timing(what: str) -> Iterator[None]:
    """Count the block's wall time as ``what`` (outermost block only, so nesting counts once)."""
    depth = getattr(_LOCAL, "depth", 0)
    _LOCAL.depth = depth + 1
    start = time.perf_counter()
    try:
        yield
    finally:
        _LOCAL.depth = depth
        if depth == 0:
            seconds = time.perf_counter() - start
            with _LOCK:
                _SECONDS[what] = _SECONDS.get(what, 0.0) + seconds
                _CALLS[what] = _CALLS.get(what, 0) + 1
                if threading.current_thread() is threading.main_thread():
                    _MAIN_SECONDS[what] = _MAIN_SECONDS.get(what, 0.0) + seconds


def timed(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with timing(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper


def mlflow_seconds(main_only: bool = False) -> float:
    """Seconds spent in this module's calls (less drawing figures) since ``reset_overhead``,
    in every thread or (``main_only``) in the main thread."""
    return sum((_MAIN_SECONDS if main_only else _SECONDS).values())


def overhead_by_call() -> dict[str, tuple[float, int]]:
    """Seconds and number of calls per kind (``pipeline_run``, ``child_run``, ``end_run``, ...)."""
    return {what: (seconds, _CALLS[what]) for what, seconds in _SECONDS.items()}


def reset_overhead() -> None:
    """Start counting afresh."""
    with _LOCK:
        _SECONDS.clear()
        _MAIN_SECONDS.clear()
        _CALLS.clear()
