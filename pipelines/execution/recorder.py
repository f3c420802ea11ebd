"""The driver's recording beside the units: one background thread fed by a bounded queue.

While the executor's workers run units, the driver records what has come back
(the train stage: a child run per instrument and forecaster, its files, charts
and registered model). ``Recorder`` runs those records in one thread of the
driver's process, in the order they were submitted, so the driver goes back to
handing out units and collecting results at once::

    with Recorder(background=True) as recorder:
        for unit, outcome in executor.run(fn, units):
            ...
            future = recorder.submit(record, key, pieces)  # returns at once
    results = [future.result() for future in futures]  # the block waited for them all

- **One thread, in order.** Records are made one at a time in submission order
  (a stage submits them in an order of its own that does not depend on which
  unit finished first), so MLflow sees the same sequence of calls on every run.
- **Bounded.** At most ``capacity`` records wait; ``submit`` blocks while the
  queue is full, so a driver that makes results faster than they can be
  recorded waits rather than holding every result in memory.
- **A failed record stops the recording.** The records after it are not made,
  and its exception is raised in the driver at the next ``submit`` or when the
  block ends, as if the driver had made the record itself.
- **An interruption** (Ctrl-C, SIGTERM, an error of the driver) drops the
  records not started and waits for the one being made, so the stage ends its
  runs (``pipelines.tracking``) only once nothing else opens one.
- ``background=False`` makes each record in ``submit``, in the caller's
  thread: for units that run in the driver's own process (the sequential
  executor), where a second thread would share the process's random number
  generators with the units (Python's, NumPy's, Keras's) while they train, and
  there is nothing to overlap anyway.

``waited_seconds`` is the driver's time blocked on recording (a full queue and
the final wait): with ``background=False``, the whole of it. ``busy_seconds``
is the recording's own time. Only the driver records (it alone talks to
MLflow); the recorder is part of the driver.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")

#: Records that may wait for the recording thread before ``submit`` blocks.
CAPACITY = 8

_STOP = object()


class Recorder:
    """Makes the driver's records, in a background thread or (``background=False``) at once.

    Args:
        background: Record in a thread of its own (see the module docstring).
        capacity: Records that may wait before ``submit`` blocks.
        name: The thread's name (shown in tracebacks and by ``py-spy``).
    """

    def __init__(
        self, background: bool = True, capacity: int = CAPACITY, name: str = "recorder"
    ) -> None:
        self.background = background
        self.waited_seconds = 0.0
        self.busy_seconds = 0.0
        self.error: BaseException | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def __enter__(self) -> Self:
        if self.background:
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.background:
            return
        if exc is not None:
            self._stopping.set()  # drop what has not started
            self._drain()
        started = time.perf_counter()
        self._put(_STOP)
        self._thread.join()
        self.waited_seconds += time.perf_counter() - started
        if exc is None and self.error is not None:
            raise self.error

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Make the record ``fn(*args, **kwargs)``; its result (or exception) in the future."""
        future: Future[T] = Future()
        if not self.background:
            started = time.perf_counter()
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as err:
                self.error = err
                raise
            finally:
                seconds = time.perf_counter() - started
                self.busy_seconds += seconds
                self.waited_seconds += seconds
            return future
        started = time.perf_counter()
        self._put((future, fn, args, kwargs))
        self.waited_seconds += time.perf_counter() - started
        return future

    def _put(self, item: Any) -> None:
        """Queue ``item``, waiting while the queue is full; an error of the thread's ends
        the wait (the thread then takes nothing more)."""
        while True:
            if self.error is not None and item is not _STOP:
                raise self.error
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    return

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                item[0].cancel()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn, args, kwargs = item
            if self._stopping.is_set() or self.error is not None:
                future.cancel()
                continue
            if not future.set_running_or_notify_cancel():
                continue
            started = time.perf_counter()
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as err:
                self.error = err
                future.set_exception(err)
            finally:
                self.busy_seconds += time.perf_counter() - started
