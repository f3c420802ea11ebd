"""Executors: run units of work and hand their results back as they complete.

A unit of work is a plain, picklable value and the function that runs it takes
it as its only argument and returns a picklable result; nothing is shared with
the driver but what goes in and what comes back (no shared filesystem, no
global state). That is what lets one driver run its units in its own process,
in a pool of processes on this machine, or on a Ray cluster, behind the one
interface:

    with executor_for(cfg.executor, setup=...) as executor:
        for unit, outcome in executor.run(fn, units):
            ...  # outcome is fn(unit), or the Exception it raised

- ``SequentialExecutor`` runs the units one after another in this process, in
  order, each when the driver asks for the next outcome (so a driver that stops
  at a failure runs nothing after it).
- ``LocalExecutor(workers)`` runs them in a ``concurrent.futures``
  process pool with the *spawn* start method (TensorFlow is not fork-safe).
  Each worker limits TensorFlow to ``cores // workers`` intra- and inter-op
  threads (at least one) before anything imports TensorFlow, so N workers do
  not oversubscribe the cores, then runs the driver's ``setup`` (e.g. the
  device and op-determinism settings of ``pipelines.execution.runtime``). Outcomes come
  in the order the units finish. A worker ends itself within a second of its driver's
  death, however the driver died (``kill -9`` included), so no worker outlives a stage.
- ``pipelines.execution.ray_executor.RayExecutor`` makes each unit a Ray task, on a local
  Ray or a cluster (``executor: {kind: ray}``; Ray is an optional extra,
  imported only then). It has the same interface (``Executor.run``,
  ``describe``, a ``with`` block) without importing this module, which
  imports it.

Entering a pool's or Ray's ``with`` block starts its workers without waiting
for them: each runs the driver's ``setup`` (TensorFlow's import, a few
seconds) while the driver goes on preparing its units, so a stage enters its
executor before its own set-up (``pipelines.stages.train``).

An exception raised by a unit comes back as its outcome, so the driver decides
what a failure means; ``KeyboardInterrupt`` and other ``BaseException``s of the
driver's own process are not caught. Leaving the ``with`` block on an exception
cancels the units not started and stops the workers.

The stages let a failed unit fail alone: the other units finish and are
recorded, and the stage then raises ``UnitsFailed``, one line naming every
failed unit and its error (``pipelines.execution.unit_cache`` keeps the finished units'
results, so a rerun redoes only the failed ones).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

from pipelines.config.sections import ExecutorConfig
from pipelines.execution.runtime import THREAD_VARIABLES, available_cores

U = TypeVar("U")
R = TypeVar("R")


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """TensorFlow threads of each of ``workers`` processes: ``cores // workers``, at least 1."""
    return max(1, (cores or available_cores()) // workers)


class Executor:
    """Runs units of work; see the module docstring."""

    kind = "executor"
    workers = 1
    #: Whether the units run in the driver's own process (and thread), one at a time.
    in_process = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def run(self, fn: Callable[[U], R], units: Iterable[U]) -> Iterator[tuple[U, R | Exception]]:
        """``(unit, fn(unit) or the Exception it raised)`` for every unit, as each completes."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the log, e.g. ``local, 2 workers x 4 threads``."""
        return self.kind


class SequentialExecutor(Executor):
    """Every unit in this process (the driver's, set up by the driver), in order, each
    when the driver asks for its outcome."""

    kind = "sequential"
    in_process = True

    def run(self, fn: Callable[[U], R], units: Iterable[U]) -> Iterator[tuple[U, R | Exception]]:
        for unit in units:
            try:
                outcome: R | Exception = fn(unit)
            except Exception as err:
                outcome = err
            yield unit, outcome


def _warm_up(_: Any = None) -> None:
    """A task that does nothing: submitted once per worker on entering a pool (or Ray), it
    starts the worker, whose set-up then overlaps the driver's."""


#: How often a pool worker checks that its driver is still alive, in seconds.
PARENT_CHECK_SECONDS = 0.5


def _exit_with_driver(driver: int) -> None:
    """End this worker as soon as its driver is gone, however the driver died.

    A watchdog thread, not ``PR_SET_PDEATHSIG``: that signal follows the thread that
    spawned the worker (the pool spawns from its own threads too), and a watchdog also
    works where ``prctl`` does not. Once the driver exits the worker is re-parented, so
    ``os.getppid()`` changes.
    """

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)  # nothing of a unit is worth keeping without its driver

    threading.Thread(target=watch, name="gatecast-driver-watch", daemon=True).start()


def _start_worker(threads: int, setup: Callable[[], Any] | None, driver: int = 0) -> None:
    """A pool worker's initializer: follow the driver, cap TensorFlow's threads, then the
    driver's setup."""
    if driver:
        _exit_with_driver(driver)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if "tensorflow" in sys.modules:  # imported while unpickling: the variables come too late
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if setup is not None:
        setup()


class LocalExecutor(Executor):
    """A pool of ``workers`` spawned processes on this machine.

    Args:
        workers: Worker processes (at least 1).
        setup: Called once in every worker, after the thread cap and before its
            first unit (e.g. ``functools.partial(pipelines.execution.runtime.configure_worker,
            cfg)``); must pickle (a module-level function or a partial of one).
        cores: Cores to share among the workers (default: those this process may use).
    """

    kind = "local"

    def __init__(
        self, workers: int, setup: Callable[[], Any] | None = None, cores: int | None = None
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"LocalExecutor: workers must be an integer >= 1, got {workers!r}")
        self.setup = setup
        self.workers = workers
        self.threads = threads_per_worker(workers, cores)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def describe(self) -> str:
        return f"local, {self.workers} worker(s) x {self.threads} TensorFlow thread(s)"

    def __enter__(self) -> Self:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.threads, self.setup, os.getpid()),
        )
        for _ in range(self.workers):  # spawn the workers now; not waited for
            self._pool.submit(_warm_up)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if exc_type is None:
            pool.shutdown(wait=True)
            return
        # Units still running would only be thrown away: stop their workers.
        workers = _workers(pool)  # shutdown forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            if process.is_alive():
                process.terminate()

    def run(self, fn: Callable[[U], R], units: Iterable[U]) -> Iterator[tuple[U, R | Exception]]:
        if self._pool is None:
            raise RuntimeError("LocalExecutor.run: use the executor in a `with` block")
        futures = {self._pool.submit(fn, unit): unit for unit in units}
        for future in concurrent.futures.as_completed(futures):
            unit = futures.pop(future)
            error = future.exception()
            if error is None:
                yield unit, future.result()
            elif isinstance(error, Exception):
                yield unit, error
            else:  # a worker's KeyboardInterrupt or SystemExit
                raise error


def _workers(pool: concurrent.futures.ProcessPoolExecutor) -> list[Any]:
    """The pool's worker processes (no public accessor before Python 3.14's terminate_workers)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def executor_for(
    config: ExecutorConfig,
    setup: Callable[[], Any] | None = None,
    recycles: Callable[[Any], bool] | None = None,
) -> Executor:
    """The executor the config's ``executor`` section asks for.

    Args:
        config: The ``executor`` section.
        setup: Run once in every worker process before its first unit (pool, Ray).
        recycles: Whether a unit counts towards recycling its Ray worker (default: all).
    """
    if config.kind == "local":
        return LocalExecutor(config.workers or available_cores(), setup=setup)
    if config.kind == "ray":
        from pipelines.execution.ray_executor import RayExecutor  # imports Ray only for kind: ray

        return RayExecutor(config, setup=setup, recycles=recycles)
    return SequentialExecutor()


# Failures ---------------------------------------------------------------------------------

#: Characters of one unit's error message kept in the stage's one-line report.
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class UnitFailure:
    """One unit that raised: its name (e.g. ``GSPC/kalman fold 1``) and its error."""

    unit: str
    error: BaseException

    def __str__(self) -> str:
        message = " ".join(str(self.error).split()) or "(no message)"
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 3] + "..."
        return f"{self.unit}: {type(self.error).__name__}: {message}"


class UnitsFailed(RuntimeError):
    """Some units of a stage raised; the others finished and were recorded.

    The message is one line naming every failed unit and its error, in the
    stage's unit order, e.g. ``2 of 20 train units failed: GSPC/kalman fold 0:
    RuntimeError: ...; GSPC/kalman fold 1: RuntimeError: ...``.
    """

    def __init__(self, stage: str, failures: Sequence[UnitFailure], total: int) -> None:
        self.stage = stage
        self.failures = list(failures)
        self.total = total
        listed = "; ".join(map(str, self.failures))
        super().__init__(
            f"{len(self.failures)} of {total} {stage} units failed (a rerun redoes only "
            f"these): {listed}"
        )
