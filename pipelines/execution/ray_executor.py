"""``executor: {kind: ray}``: units of work as Ray tasks, on a local Ray or a cluster.

Ray is an optional extra (``pip install 'gatecast[ray]'``), imported only when
a config asks for it; without it the stage stops with one line saying so.

Where the tasks run:

- ``executor.address`` (or, when that is null, ``RAY_ADDRESS``) connects to an
  existing Ray cluster. The project's packages travel with the job (the
  ``runtime_env`` ``py_modules`` of ``ray.init``, zipped and uploaded once; a
  task's own ``runtime_env`` takes only URIs there, and its ``env_vars`` are
  merged into the job's), so the workers need gatecast's dependencies
  installed but no shared filesystem and no checkout
  (``tests/test_ray_cluster.py`` runs the stage on nodes that cannot see the
  project's files). A Ray already initialised by the caller keeps its own
  ``runtime_env``, which must then carry the code.
- Otherwise a local Ray is started for the stage and shut down after it, with
  ``workers`` CPUs (null = every core) and no dashboard. It listens on the
  loopback address only: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray take
  127.0.0.1 as the node's address (by default Ray 2.60 binds its ports to the
  machine's network address). It sends no usage statistics
  (``RAY_USAGE_STATS_ENABLED=0``) and keeps Ray's token authentication. A Ray
  already initialised in this process (``ray.init`` by the caller) is used as
  it is and left running.

What a task gets: the driver puts each large input (bars, forecasts, the
config: pandas objects and pydantic models in the unit's fields) into Ray's
object store once, however many units share it, and each task receives the
unit's small fields plus references to those objects, which Ray resolves in
the worker (a unit never gets more bars than the driver gave it: the train
units' bars end at their fold's test end). A task's result, or the exception
it raised, comes back as an object; the driver alone writes files and talks to
MLflow.

A node lost mid-stage: Ray runs the units of a worker or node that died again,
up to ``executor.retries`` times (its ``max_retries``; a unit is a plain
function, so running it twice is safe), on whichever node can take them. Where
no live node has the CPUs (and GPUs) a unit asks for, Ray would keep it
waiting for one for ever; so when no result has come for ``CHECK_SECONDS``,
the driver asks Ray which nodes are alive, and units that no live node could
run for ``executor.wait_for_node_seconds`` are cancelled and come back as
``NoNodeForUnit`` errors: the stage names them, keeps the others' results
(``pipelines.execution.unit_cache``) and a rerun redoes only those. A result
lost with its node is made again by Ray; ``ray.get`` waits for it no longer
than that same limit.

Resources: every task asks for ``cpus_per_unit`` CPUs, and its worker's
TensorFlow gets ``max(1, floor(cpus_per_unit))`` intra- and inter-op threads
through ``runtime_env`` environment variables (read before TensorFlow starts;
Ray's own ``OMP_NUM_THREADS`` does not limit TensorFlow). A unit whose ``gpus``
is a number (set by the driver when it made the unit: a ``device`` forecaster's
units when the device is a GPU) asks for that many GPUs and runs in a worker pool of its own
(``GATECAST_UNIT_DEVICE=gpu``), so a worker that imported TensorFlow without
a GPU never gets a GPU unit; the other units run with
``GATECAST_UNIT_DEVICE=cpu`` (``pipelines.execution.runtime.configure_worker``).

The driver's ``setup`` (device and op determinism) runs once in each worker
process before its first unit of the stage. Entering the executor starts Ray
and then, without waiting for them, one do-nothing task for each unit that
fits in ``workers`` CPUs (on a cluster, the cluster's CPUs) at once, so the CPU
workers start and run the setup (TensorFlow's import) while the driver
prepares its units; the GPU units' workers start with their first unit. A
worker fetches the setup with its first unit only (``_run_task``).
``ray.init`` itself runs in the driver's
main thread: run in a thread of its own so that it too overlapped the driver's
preparation, it bought nothing measurable on 2 cores (16 synthetic
instruments, 2 runs each way: the first unit started 11.6-11.7 s after entering
against 11.4-15.5 s; both starts are CPU-bound and share the same cores), and
that thread would have to outlive Ray, since Ray starts its processes with
``PR_SET_PDEATHSIG``, which Linux sends when the thread that started them
ends. Workers are recycled after
``UNITS_PER_WORKER`` units that grow a worker's memory (Ray's ``max_calls``;
the ``recycles`` predicate, by default every unit; the train stage counts only
its LSTM units, since the classic forecasters' units leave nothing behind and
recycling after them only paid TensorFlow's start-up again): measured on the smoke config
(2 CPUs, one worker, 48 LSTM units), a worker's RSS grew by about 14 MiB a
unit, from 950 to 1215 MiB over 32 units, and the train units' Keras session
clearing every 16 units (``pipelines.execution.units``) gave back only about 30 MiB each
time (TensorFlow keeps memory that ``clear_session`` does not free). Recycled
after 32 units, the next worker started again at about 930 MiB and the last
of the 48 units ended at 1062 MiB instead of 1404. A new worker costs
TensorFlow's start-up and the first fit's compilation (about 15 s on that
busy 2-core machine), once every ``UNITS_PER_WORKER`` units.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pandas as pd
from pydantic import BaseModel

from pipelines.common.errors import ConfigError
from pipelines.config.sections import ExecutorConfig
from pipelines.execution.runtime import THREAD_VARIABLES, available_cores

log = logging.getLogger("gatecast.ray")

U = TypeVar("U")
R = TypeVar("R")

MISSING_RAY = "executor kind 'ray' needs the ray extra: pip install 'gatecast[ray]'"

#: Values of a unit's fields that go into the object store once and travel by reference.
SHARED_TYPES = (pd.DataFrame, pd.Series, BaseModel)

#: Environment of a local Ray (see the module docstring).
LOCAL_RAY_ENVIRONMENT = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}

#: Tells ``pipelines.execution.runtime.configure_worker`` whether the worker's units use a GPU.
UNIT_DEVICE_VARIABLE = "GATECAST_UNIT_DEVICE"

#: Units that count (``recycles``) a worker runs before Ray replaces it (bounds its memory;
#: see the module docstring).
UNITS_PER_WORKER = 32

# The packages a cluster's workers import, and the distribution that installs them (its
# metadata holds the entry points), sent with the job.
PACKAGES = ("core", "models", "strategies", "pipelines")
DISTRIBUTION = "gatecast"

#: Seconds without a result after which the driver checks that a live node can still run
#: the units it waits for.
CHECK_SECONDS = 2.0


def import_ray(local: bool) -> Any:
    """Import Ray, or stop with ``MISSING_RAY``; for a local Ray, set its environment first.

    The loopback setting is read when Ray is imported, so a Ray imported
    earlier by someone else gets the same setting through its constant.
    """
    if local:
        os.environ.update(LOCAL_RAY_ENVIRONMENT)
    try:
        import ray
    except ImportError:
        raise ConfigError(MISSING_RAY) from None
    if local:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # what the variable above gives at import
        # Ray turns token authentication on for a new local Ray and says so with a warning
        # that suggests turning it off: gatecast keeps it on, without the line
        logging.getLogger(_AUTH_LOGGER).addFilter(_quiet_token_notice)
    return ray


_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _quiet_token_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


class NoNodeForUnit(RuntimeError):
    """No live node of the cluster can run the unit: its node was lost (or the cluster never
    had the CPUs and GPUs it asks for), and none came within ``wait_for_node_seconds``."""


@dataclasses.dataclass(frozen=True)
class _Raised:
    """A unit's exception, returned as its task's value (so its type survives as it is)."""

    error: Exception


# Setups already run in this worker process, by executor token.
_SETUP_DONE: set[str] = set()


def _run_task(
    fn: Callable[[Any], Any],
    setup: tuple[Any],
    token: str,
    shell: Any,
    names: tuple[str, ...],
    *values: Any,
) -> Any:
    """The Ray task: the driver's setup once per worker, then ``fn`` on the rebuilt unit.

    ``setup`` holds the setup's object reference inside a tuple, which Ray passes on
    as it is: fetched here by a worker's first unit only. (A reference given as an
    argument itself is resolved for every task, and unpickling the setup's config
    costs tens of milliseconds: its components are looked up by entry point.)
    """
    try:
        if token not in _SETUP_DONE:
            import ray

            function = ray.get(setup[0])
            if function is not None:
                function()
            _SETUP_DONE.add(token)
        big = dict(zip(names, values, strict=True))
        return fn(dataclasses.replace(shell, **big) if names else shell)
    except Exception as err:
        return _Raised(err)


def _warm_up(_: Any) -> None:
    """The do-nothing task that starts a worker (and runs the setup) on entering."""


def _run_light_task(*args: Any) -> Any:
    """``_run_task`` for a unit that does not count towards recycling its worker (a task
    of its own: Ray counts ``max_calls`` per remote function)."""
    return _run_task(*args)


class RayExecutor:
    """Units as Ray tasks; see the module docstring. The interface of
    ``pipelines.execution.executors.Executor`` (not its subclass: that module imports this one).

    Args:
        config: The ``executor`` section (``kind: ray``).
        setup: Run once in every worker before its first unit; must pickle.
        recycles: Whether a unit counts towards recycling its worker after
            ``UNITS_PER_WORKER`` of them (default: every unit does).
    """

    kind = "ray"

    def __init__(
        self,
        config: ExecutorConfig,
        setup: Callable[[], Any] | None = None,
        recycles: Callable[[Any], bool] | None = None,
    ) -> None:
        self.address = config.address or os.environ.get("RAY_ADDRESS") or None
        self.ray = import_ray(local=self.address is None)
        self.workers = config.workers or available_cores()
        self.cpus = config.cpus_per_unit
        self.threads = max(1, math.floor(config.cpus_per_unit))
        self.retries = config.retries
        self.wait_for_node = config.wait_for_node_seconds
        self.setup = setup
        self.recycles = recycles or (lambda unit: True)
        self._started = False
        self._token = uuid.uuid4().hex
        self._task: Any = None
        self._light_task: Any = None
        self._setup_ref: Any = None
        self._warming: list[Any] = []
        self._pending: dict[Any, Any] = {}
        self._needs: dict[Any, tuple[float, float]] = {}  # a task's (CPUs, GPUs)
        self._signals: dict[int, Any] = {}

    def describe(self) -> str:
        where = f"cluster at {self.address}" if self.address else f"local, {self.workers} CPU(s)"
        return f"ray ({where}), {self.cpus:g} CPU(s) x {self.threads} TensorFlow thread(s) a unit"

    def _runtime_env(self, device: str) -> dict[str, Any]:
        env = {name: str(self.threads) for name in (*THREAD_VARIABLES, "OMP_NUM_THREADS")}
        env[UNIT_DEVICE_VARIABLE] = device
        return {"env_vars": env}

    def __enter__(self) -> Self:
        ray = self.ray
        if not ray.is_initialized():
            # ray.init installs its own SIGTERM handler and shutdown leaves it: put
            # the driver's back on exit (its runs end KILLED on SIGTERM, pipelines.tracking)
            self._signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
            if self.address is None:
                ray.init(
                    address="local",  # never a cluster `ray start` left on this machine
                    num_cpus=self.workers,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                )
            else:
                # the code travels once, with the job: a task's runtime_env takes only
                # URIs, and its env_vars are merged into the job's
                ray.init(
                    address=self.address,
                    runtime_env={"py_modules": _code()},
                    logging_level=logging.WARNING,
                )
            self._started = True
        if self.address is not None:  # warm as many workers as the cluster has CPUs
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 0)))
        self._task = ray.remote(max_calls=UNITS_PER_WORKER)(_run_task)
        self._light_task = ray.remote(_run_light_task)
        self._setup_ref = ray.put(self.setup)
        warm = self._light_task.options(num_cpus=self.cpus, runtime_env=self._runtime_env("cpu"))
        self._warming = [
            warm.remote(_warm_up, (self._setup_ref,), self._token, None, ())
            for _ in range(max(1, int(self.workers // self.cpus)))
        ]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pending, self._pending, self._needs = self._pending, {}, {}
        for ref in pending:  # only after an error or interruption: the driver stopped early
            self.ray.cancel(ref, force=True)
        warming, self._warming = self._warming, []
        if warming:  # done by now unless the stage failed before its units ran
            _, starting = self.ray.wait(warming, num_returns=len(warming), timeout=0)
            for ref in starting:
                self.ray.cancel(ref)
        self._task = self._light_task = self._setup_ref = None
        if self._started:
            self.ray.shutdown()
            self._started = False
            if threading.current_thread() is threading.main_thread():
                for number, handler in self._signals.items():
                    signal.signal(number, handler)

    def _submit(self, fn: Callable[[U], R], unit: U, shared: dict[int, tuple[Any, Any]]) -> Any:
        names: list[str] = []
        refs: list[Any] = []
        shell = unit
        if dataclasses.is_dataclass(unit) and not isinstance(unit, type):
            big = {
                f.name: value
                for f in dataclasses.fields(unit)
                if isinstance(value := getattr(unit, f.name), SHARED_TYPES)
            }
            for name, value in big.items():
                if id(value) not in shared:  # the value is kept, so its id is not reused
                    shared[id(value)] = (value, self.ray.put(value))
                names.append(name)
                refs.append(shared[id(value)][1])
            shell = dataclasses.replace(unit, **dict.fromkeys(big))
        gpus = getattr(unit, "gpus", None)  # decided by the driver when it made the unit
        options: dict[str, Any] = {
            "num_cpus": self.cpus,
            "runtime_env": self._runtime_env("cpu" if gpus is None else "gpu"),
            "max_retries": self.retries,  # a unit is a plain function: running it again is safe
        }
        if gpus:
            options["num_gpus"] = gpus
        task = (self._task if self.recycles(unit) else self._light_task).options(**options)
        ref = task.remote(fn, (self._setup_ref,), self._token, shell, tuple(names), *refs)
        self._needs[ref] = (self.cpus, gpus or 0.0)
        return ref

    def run(self, fn: Callable[[U], R], units: Iterable[U]) -> Iterator[tuple[U, R | Exception]]:
        if self._task is None:
            raise RuntimeError("RayExecutor.run: use the executor in a `with` block")
        ray = self.ray
        shared: dict[int, tuple[Any, Any]] = {}
        self._pending = {self._submit(fn, unit, shared): unit for unit in units}
        waiting = list(self._pending)
        watch = _NodeWatch(ray, self.wait_for_node)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=CHECK_SECONDS)
            if not ready:  # a quiet spell: can a live node still run the units left?
                waiting = yield from self._give_up_stranded(waiting, watch)
                continue
            if waiting:  # and every other one already done: one pass, not one per unit
                more, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=0)
                ready += more
            for ref in ready:
                unit = self._pending.pop(ref)
                self._needs.pop(ref, None)
                try:  # bounded: a result lost with its node is made again where nodes are
                    value = ray.get(ref, timeout=self.wait_for_node)
                except Exception as err:  # the worker died, or the task could not run
                    yield unit, err
                    continue
                yield unit, value.error if isinstance(value, _Raised) else value

    def _give_up_stranded(
        self, waiting: list[Any], watch: _NodeWatch
    ) -> Iterator[tuple[Any, Exception]]:
        """Cancel the waiting tasks that no live node has been able to run for
        ``wait_for_node_seconds``, yield a ``NoNodeForUnit`` for each; return the others."""
        stranded = watch.stranded({self._needs[ref] for ref in waiting})
        if not stranded:
            return waiting
        kept = []
        for ref in waiting:
            cpus, gpus = self._needs[ref]
            if (cpus, gpus) not in stranded:
                kept.append(ref)
                continue
            self.ray.cancel(ref, force=True)
            unit = self._pending.pop(ref)
            del self._needs[ref]
            asks = f"{cpus:g} CPU(s)" + (f" and {gpus:g} GPU(s)" if gpus else "")
            error = NoNodeForUnit(
                f"no live Ray node has the {asks} this unit asks for; waited "
                f"{self.wait_for_node:g} s (executor.wait_for_node_seconds)"
            )
            yield unit, error
        return kept


class _NodeWatch:
    """Which units' needs (CPUs, GPUs) no live node has met for ``seconds`` (None: never
    given up); Ray itself would keep such tasks waiting for a node for ever."""

    def __init__(self, ray: Any, seconds: float | None) -> None:
        self.ray, self.seconds = ray, seconds
        self.since: dict[tuple[float, float], float] = {}

    def stranded(self, needs: set[tuple[float, float]]) -> set[tuple[float, float]]:
        if self.seconds is None:
            return set()
        nodes = [node["Resources"] for node in self.ray.nodes() if node["Alive"]]
        now, out = time.monotonic(), set()
        for cpus, gpus in needs:
            if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
                self.since.pop((cpus, gpus), None)
            elif now - self.since.setdefault((cpus, gpus), now) >= self.seconds:
                out.add((cpus, gpus))
        return out


def _code() -> list[Any]:
    """What a cluster's nodes need of gatecast, sent with the job: its packages, and the
    metadata that installed them, whose entry points name the built-in components (a
    config's forecasters and strategies are looked up by them when it is unpickled)."""
    code: list[Any] = [sys.modules[p] for p in PACKAGES if _importable(p)]
    try:
        metadata = getattr(importlib.metadata.distribution(DISTRIBUTION), "_path", None)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        metadata = None
    if metadata is not None and Path(metadata).is_dir():
        code.append(str(metadata))  # a folder next to the packages: found on the node's path
    return code


def _importable(package: str) -> bool:
    if package not in sys.modules:
        try:
            __import__(package)
        except ImportError:
            return False
    return True
