"""Finished units' results, kept by the driver so that a rerun redoes only what failed.

A stage runs its units through ``UnitRunner``: a unit that fails lets the
others finish, and the stage then raises ``pipelines.execution.executors.UnitsFailed``,
naming every failed unit in one line. Each finished unit's result is kept, under
``build/<name>/<stage folder>/.units/<key>.pkl`` (written atomically), and
the next run of the stage takes it from here instead of running the unit
again, logging one line ``reused N of M units``. After a stage that finished,
entries that none of its units asked for are deleted, so the folder holds the
last run's units only.

The key is a SHA-256 of:

- the unit's inputs, as the unit module states them (``cache_inputs``: every
  field the unit's function reads, e.g. a train unit's bars, fold, seed,
  ``batch_shards``, device and the config sections that build its forecaster),
  hashed by value: pandas objects through ``pandas.util.hash_pandas_object``
  (every value's bits, the index included) with their column names and
  dtypes; dataclasses field by field; pydantic models as their JSON dump;
  anything else that is not a plain scalar, list or mapping is refused (a
  ``TypeError``), so no input is hashed by its ``repr`` by mistake;
- the code the unit runs: every project file the unit's module imports,
  directly or not (``pipelines.stages.depends.code_files``), byte for byte;
- the versions of Python and of the libraries whose numbers the results
  depend on (``LIBRARIES``).

Why that is enough: a unit is a plain function of its inputs (no files, no
global state, seeds set from its own fields, see ``pipelines.execution.units`` and
``pipelines.execution.backtest_unit``), so its result is fixed by the function's code,
the libraries it calls and its arguments, and the key hashes all three. What
it leaves out cannot change the numbers: the executor (every executor gives
bit-identical results) and config keys the unit does not read.

The files are pickles written by this project's driver into its own build
folder; they are read back only from there. A file that cannot be read back is
a miss, and the unit runs again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import pickle
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from pipelines.common.code import ROOT, code_files
from pipelines.common.outputs import atomic_write
from pipelines.execution.executors import Executor, R, U, UnitFailure, UnitsFailed

log = logging.getLogger("gatecast.cache")

FOLDER = ".units"
LIBRARIES = (
    "numpy",
    "pandas",
    "scipy",
    "statsmodels",
    "tensorflow",
    "keras",
    "backtrader",
    "gatecast",
)
MISSING = object()


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` to ``digest``, by value and with its type (see the module docstring)."""

    def add(*parts: object) -> None:
        digest.update(("\x1f".join(map(str, parts)) + "\x1e").encode())

    if value is None or isinstance(value, bool | int | float | str):
        add(type(value).__name__, repr(value))
    elif isinstance(value, np.generic):
        add(type(value).__name__, repr(value.item()))
    elif isinstance(value, pd.Timestamp):
        add("Timestamp", value.isoformat(), value.tz)
    elif isinstance(value, pd.DataFrame | pd.Series):
        columns = list(value.columns) if isinstance(value, pd.DataFrame) else [value.name]
        dtypes = list(value.dtypes) if isinstance(value, pd.DataFrame) else [value.dtype]
        add(type(value).__name__, value.shape, columns, dtypes, value.index.name, value.index.dtype)
        digest.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
    elif isinstance(value, BaseModel):
        add(type(value).__name__)
        _feed(digest, value.model_dump(mode="json"))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        add(type(value).__name__)
        for field in dataclasses.fields(value):
            add(field.name)
            _feed(digest, getattr(value, field.name))
    elif isinstance(value, Mapping):
        add("map", len(value))
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        add(type(value).__name__, len(value))
        for item in value:
            _feed(digest, item)
    else:
        raise TypeError(f"unit_cache: cannot hash a {type(value).__name__} by value")


def fingerprint(value: Any) -> str:
    """SHA-256 (hex) of ``value`` by value (see the module docstring)."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def code_digest(module: str) -> str:
    """SHA-256 of the files of ``module`` and every project module it imports, and of the
    versions of Python and ``LIBRARIES``."""
    digest = hashlib.sha256()
    for path in code_files(module):
        digest.update(f"{path.relative_to(ROOT)}\0".encode())
        digest.update(path.read_bytes())
    versions = [platform.python_version(), *(f"{p}={_version(p)}" for p in LIBRARIES)]
    digest.update("\0".join(versions).encode())
    return digest.hexdigest()


class UnitCache:
    """The finished units of one stage; see the module docstring.

    Args:
        directory: The stage's output folder (``build/<name>/forecasts``); the
            entries go in its ``.units`` folder.
        module: The module of the unit's function (its code is part of the key).
        inputs: A unit's inputs, as ``fingerprint`` takes them (``cache_inputs``).
    """

    def __init__(self, directory: Path, module: str, inputs: Callable[[Any], Any]) -> None:
        self.directory = Path(directory) / FOLDER
        self.code = code_digest(module)
        self.inputs = inputs
        self.keys: dict[int, str] = {}

    def key(self, unit: Any) -> str:
        """The unit's key (computed once per unit object)."""
        if id(unit) not in self.keys:
            self.keys[id(unit)] = fingerprint([self.code, self.inputs(unit)])
        return self.keys[id(unit)]

    def _path(self, unit: Any) -> Path:
        return self.directory / f"{self.key(unit)}.pkl"

    def get(self, unit: Any) -> Any:
        """The unit's kept result, or ``MISSING``."""
        path = self._path(unit)
        if not path.is_file():
            return MISSING
        try:
            return pickle.loads(path.read_bytes())
        except Exception as err:  # a damaged entry is a miss: the unit runs again
            log.warning("ignored the unreadable result %s of unit %s: %s", path.name, unit, err)
            return MISSING

    def put(self, unit: Any, result: Any) -> None:
        """Keep ``result`` as the unit's."""
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        atomic_write(self._path(unit), lambda tmp: tmp.write_bytes(data))

    def split(self, units: Iterable[Any], stage: str) -> tuple[list[tuple[Any, Any]], list[Any]]:
        """``(unit, kept result)`` of the units already done, and the units still to run.

        Logs one line, ``<stage>: reused N of M units``, when any were reused.
        """
        done, todo = [], []
        for unit in units:
            result = self.get(unit)
            if result is MISSING:
                todo.append(unit)
            else:
                done.append((unit, result))
        if done:
            count = len(done) + len(todo)
            log.info(
                "%s: reused %d of %d units (finished in an earlier run)", stage, len(done), count
            )
        return done, todo

    def prune(self, units: Iterable[Any]) -> None:
        """Delete the entries of units other than ``units`` (after a stage that finished)."""
        keep = {f"{self.key(unit)}.pkl" for unit in units}
        if self.directory.is_dir():
            for path in self.directory.glob("*.pkl"):
                if path.name not in keep:
                    path.unlink(missing_ok=True)


class UnitRunner:
    """Runs a stage's units: kept results first, then the others through an executor.

    ``run`` yields ``(unit, result or Exception)`` for every unit, like
    ``Executor.run``, keeps each new result in ``cache`` and notes each failure;
    the stage handles both as they come (records a run, marks one FAILED), then
    calls ``finish``: ``UnitsFailed`` naming every failed unit (in the units'
    order), or, when none failed, the cache pruned to this run's units.

    Args:
        stage: The stage's name, for messages (``train``, ``backtest``).
        cache: Where finished units' results are kept (None: nowhere, nothing reused).
        label: A unit's name in messages, e.g. ``GSPC/kalman fold 1``.
    """

    def __init__(
        self, stage: str, cache: UnitCache | None, label: Callable[[Any], str] = str
    ) -> None:
        self.stage, self.cache, self.label = stage, cache, label
        self.units: list[Any] = []
        self.failures: list[tuple[int, UnitFailure]] = []

    def run(
        self, executor: Executor, fn: Callable[[U], R], units: Sequence[U]
    ) -> Iterator[tuple[U, R | Exception]]:
        """Every unit's outcome, kept results first (see the class docstring)."""
        self.units = list(units)
        order = {id(unit): k for k, unit in enumerate(self.units)}
        done, todo = self.cache.split(units, self.stage) if self.cache else ([], self.units)
        reused = {id(unit) for unit, _ in done}
        for unit, outcome in itertools.chain(done, executor.run(fn, todo)):
            if isinstance(outcome, Exception):
                failure = UnitFailure(self.label(unit), outcome)
                self.failures.append((order[id(unit)], failure))
                log.error("%s unit failed: %s", self.stage, failure)
            elif self.cache is not None and id(unit) not in reused:
                self.cache.put(unit, outcome)
            yield unit, outcome

    def finish(self) -> None:
        """Raise ``UnitsFailed`` if any unit failed; else prune the cache to these units."""
        if self.failures:
            failed = [failure for _, failure in sorted(self.failures, key=lambda f: f[0])]
            raise UnitsFailed(self.stage, failed, len(self.units))
        if self.cache is not None:
            self.cache.prune(self.units)
