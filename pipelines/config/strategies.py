"""The strategies of ``backtest:``: a name of the user's choosing -> a registered strategy
and its parameters.

``backtest.strategies`` maps a name to ``{kind: <registered name>, ...its parameters}``
(``kind`` defaults to the name). Three shorthands of earlier configs stay valid
beside it: ``backtest.sma_crossover: {fast, slow}``, ``backtest.ema_crossover:
{fast, slow}`` and ``backtest.buy_and_hold: true``; each sets (or, with null
or false, drops) the entry of that name. Every forecaster's forecast is
traded by ``backtest.forecast_strategy``; a strategy under
``backtest.strategies`` whose class trades a forecast reads the forecaster
named by its ``forecaster:`` key (default: ``report.candidate``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from core import registry
from pipelines.common.paths import is_plain_name
from pipelines.common.strategy_names import SEED_COLUMN
from pipelines.config.strict_yaml import echo
from pipelines.config.validation import KeyedErrors, error_lines

#: The strategies every config runs unless it drops them (null, or false for buy_and_hold).
DEFAULT_STRATEGIES: dict[str, dict[str, Any]] = {
    "sma_crossover": {"fast": 20, "slow": 50},
    "ema_crossover": {"fast": 12, "slow": 26},
    "buy_and_hold": {},
}
#: ``backtest.<name>`` keys that set the entry ``<name>`` of ``backtest.strategies``.
SHORTHANDS = tuple(DEFAULT_STRATEGIES)


@dataclass(frozen=True)
class StrategySpec:
    """One configured strategy.

    Attributes:
        name: Its key (the name of its backtest, run and report row).
        kind: The registered name (or ``package.module:Class``) of its class.
        cls: The class (a ``strategies.base.Strategy``).
        params: Its parameters, validated by the class's ``Config`` model (or
            one made from its Backtrader ``params``).
        forecaster: For a class that trades a forecast: the forecaster whose
            column it reads (None: ``report.candidate``).
    """

    name: str
    kind: str
    cls: type
    params: BaseModel
    forecaster: str | None = None

    def arguments(self) -> dict[str, Any]:
        """The parameters as the engine takes them."""
        return self.params.model_dump()

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its section: a parameters model made from Backtrader params is a
        # class made at run time, which pickle cannot find by name
        return _strategy_spec, (self.name, f"backtest.strategies.{self.name}", self.section())

    def section(self) -> dict[str, Any]:
        """The config section this spec validates from (with ``kind`` always)."""
        return {"kind": self.kind} | self.dump()

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.kind == self.name else {"kind": self.kind}
        if self.forecaster is not None:
            out["forecaster"] = self.forecaster
        return out | self.params.model_dump(mode="json")


class StrategiesConfig(Mapping[str, StrategySpec]):
    """``backtest.strategies``: configured strategies by name, in the config's order."""

    def __init__(self, specs: Mapping[str, StrategySpec]) -> None:
        self._specs = dict(specs)

    def __getitem__(self, name: str) -> StrategySpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StrategiesConfig) and self.dump() == other.dump()

    def __hash__(self) -> int:
        return hash(repr(self.dump()))

    def __repr__(self) -> str:
        return f"StrategiesConfig({self.dump()!r})"

    def dump(self) -> dict[str, Any]:
        return {name: spec.dump() for name, spec in self._specs.items()}

    @classmethod
    def parse(cls, raw: Any, shorthands: Mapping[str, Any] | None = None) -> StrategiesConfig:
        """Validate ``backtest.strategies`` (and the shorthands given beside it)."""
        if isinstance(raw, StrategiesConfig) and not shorthands:
            return raw
        if isinstance(raw, StrategiesConfig):
            raw = raw.dump()
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise KeyedErrors(
                ["backtest.strategies: expected a mapping of name: {kind: ..., parameters}"]
            )
        sections: dict[str, tuple[str, Any]] = {
            name: (f"backtest.strategies.{name}", section)
            for name, section in DEFAULT_STRATEGIES.items()
        }
        for name, value in (shorthands or {}).items():
            key = f"backtest.{name}"
            if value is True:
                value = {}
            elif value is False:
                value = None
            sections[name] = (key, value)
        for name, section in raw.items():
            sections[name] = (f"backtest.strategies.{name}", section)
        specs: dict[str, StrategySpec] = {}
        errors: list[str] = []
        for name, (key, section) in sections.items():
            if section is None:
                continue
            try:
                specs[name] = _strategy_spec(name, key, section)
            except KeyedErrors as err:
                errors.extend(err.lines)
        if errors:
            raise KeyedErrors(errors)
        return cls(specs)


def load_strategy(kind: Any, key: str) -> type:
    """The strategy class registered as ``kind``, checked to declare what the pipelines read."""
    if not isinstance(kind, str):
        raise KeyedErrors([f"{key}: expected a registered strategy name, got {echo(kind)}"])
    try:
        strategy = registry.load(registry.STRATEGIES, kind)
    except registry.RegistryError as err:
        raise KeyedErrors([f"{key}: {err}"]) from None
    # strategies.base.Strategy's declarations, checked by their parts: the config imports
    # no strategy module (nor Backtrader), so the data stage does not depend on them
    if not callable(getattr(strategy, "parameter_defaults", None)):
        raise KeyedErrors(
            [
                f"{key}: {kind} is not a strategies.base.Strategy (subclass it to declare "
                "trades_forecast, family and warmup_bars)"
            ]
        )
    try:
        strategy.warmup_bars(strategy.parameter_defaults())
    except NotImplementedError as err:
        raise KeyedErrors([f"{key}: {err}"]) from None
    return strategy


def _strategy_spec(name: Any, key: str, section: Any) -> StrategySpec:
    if not is_plain_name(name) or SEED_COLUMN.fullmatch(name):
        raise KeyedErrors(
            [
                f"{key}: a strategy's name: letters, digits, '.', '_' and '-' only, "
                "not ending in _seed<k> (the names of a forecaster's seeds)"
            ]
        )
    if not isinstance(section, dict):
        raise KeyedErrors(
            [
                f"{key}: expected a mapping of its parameters ({{}} for the defaults), "
                f"got {echo(section)}"
            ]
        )
    params = dict(section)
    kind = params.pop("kind", name)
    forecaster = params.pop("forecaster", None)
    strategy = load_strategy(kind, f"{key}.kind" if "kind" in section else key)
    if forecaster is not None and not strategy.trades_forecast:
        raise KeyedErrors([f"{key}.forecaster: {kind} does not trade a forecast"])
    if forecaster is not None and not isinstance(forecaster, str):
        raise KeyedErrors([f"{key}.forecaster: a forecaster's name, got {echo(forecaster)}"])
    model = parameters_model(strategy)
    try:
        validated = model.model_validate(params)
    except ValidationError as err:
        raise KeyedErrors(error_lines(err, model, prefix=key)) from None
    return StrategySpec(name, kind, strategy, validated, forecaster)


@functools.cache
def parameters_model(strategy: type) -> type[BaseModel]:
    """The class's ``Config`` model, or one made from its Backtrader ``params``
    (each optional, with its default; the engine's own left out)."""
    if strategy.Config is not None:
        return strategy.Config
    fields = {k: (Any, v) for k, v in strategy.parameter_defaults().items()}
    return create_model(
        f"{strategy.__name__}Params",
        __config__=ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True),
        **fields,
    )
