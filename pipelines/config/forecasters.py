"""The ``forecasters:`` section: a name of the user's choosing -> a registered forecaster
and its parameters."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    create_model,
)

from core import registry
from pipelines.common.paths import is_plain_name
from pipelines.config.strict_yaml import echo
from pipelines.config.validation import KeyedErrors, error_lines

# Forecasters: registered components, configured by name ---------------------------

#: Forecasters every config runs unless it sets them to null: the naive random walk,
#: the benchmark of every forecast metric (Theil's U2, Diebold-Mariano).
DEFAULT_FORECASTERS: dict[str, dict[str, Any]] = {"random_walk": {}}
#: The most seeds a stochastic forecaster runs (``forecasters.<name>.seeds``).
MAX_SEEDS = 50


@dataclass(frozen=True)
class ForecasterSpec:
    """One configured forecaster: its name in the config, its kind and its parameters.

    Attributes:
        name: The key under ``forecasters:`` (the column, the run and the report's name).
        kind: The registered name (or ``package.module:Class``) of its class.
        cls: The class.
        params: Its parameters, validated by the class's ``Config`` model (or a
            model made from its constructor's signature).
        seeds: How many seeds it runs (stochastic forecasters only; else 1).
    """

    name: str
    kind: str
    cls: type  # a models.base.Forecaster
    params: BaseModel
    seeds: int = 1

    def arguments(self) -> dict[str, Any]:
        """The parameters as keyword arguments of ``cls.from_config``."""
        return self.params.model_dump()

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its section: a parameters model made from a constructor's signature
        # is a class made at run time, which pickle cannot find by name
        return _forecaster_spec, (self.name, {"kind": self.kind} | self.dump())

    def dump(self) -> dict[str, Any]:
        """The section as a config file writes it (it validates back to this spec)."""
        out: dict[str, Any] = {} if self.kind == self.name else {"kind": self.kind}
        if self.cls.stochastic:
            out["seeds"] = self.seeds
        return out | self.params.model_dump(mode="json")


class ForecastersConfig(Mapping[str, ForecasterSpec]):
    """The ``forecasters:`` section: a name of the user's choosing -> ``{kind, ...params}``.

    ``kind`` defaults to the name, so ``sma: {window: 20}`` is the registered
    ``sma``; ``sma_200: {kind: sma, window: 200}`` runs beside it. A section set
    to null is left out (``random_walk: null`` drops the default random walk).
    """

    def __init__(self, specs: Mapping[str, ForecasterSpec]) -> None:
        self._specs = dict(specs)

    def __getitem__(self, name: str) -> ForecasterSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ForecastersConfig) and self.dump() == other.dump()

    def __hash__(self) -> int:
        return hash(repr(self.dump()))

    def __repr__(self) -> str:
        return f"ForecastersConfig({self.dump()!r})"

    def enabled(self) -> dict[str, ForecasterSpec]:
        """The configured forecasters by name, in the config's order."""
        return dict(self._specs)

    def with_capability(self, capability: str) -> dict[str, ForecasterSpec]:
        """Those whose class declares ``capability`` (``stochastic``, ``export``, ...)."""
        return {n: s for n, s in self._specs.items() if getattr(s.cls, capability, False)}

    def dump(self) -> dict[str, Any]:
        return {name: spec.dump() for name, spec in self._specs.items()}

    @classmethod
    def parse(cls, raw: Any) -> ForecastersConfig:
        """Validate a ``forecasters:`` mapping; raise ``KeyedErrors`` naming each bad key."""
        if isinstance(raw, ForecastersConfig):
            return raw
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise KeyedErrors(["forecasters: expected a mapping of name: {kind: ..., parameters}"])
        sections = {k: v for k, v in DEFAULT_FORECASTERS.items() if k not in raw} | raw
        specs: dict[str, ForecasterSpec] = {}
        errors: list[str] = []
        for name, section in sections.items():
            if section is None:
                continue
            try:
                specs[name] = _forecaster_spec(name, section)
            except KeyedErrors as err:
                errors.extend(err.lines)
        if errors:
            raise KeyedErrors(errors)
        return cls(specs)


def _forecaster_spec(name: Any, section: Any) -> ForecasterSpec:
    key = f"forecasters.{name}"
    if not is_plain_name(name):
        raise KeyedErrors([f"{key}: a forecaster's name: letters, digits, '.', '_' and '-' only"])
    if not isinstance(section, dict):
        raise KeyedErrors(
            [
                f"{key}: expected a mapping of its parameters ({{}} for the defaults), "
                f"got {echo(section)}"
            ]
        )
    params = dict(section)
    kind = params.pop("kind", name)
    seeds = params.pop("seeds", None)
    if not isinstance(kind, str):
        raise KeyedErrors([f"{key}.kind: expected a registered name, got {echo(kind)}"])
    try:
        forecaster = registry.load(registry.FORECASTERS, kind)
    except registry.RegistryError as err:
        raise KeyedErrors(
            [f"{key}.kind: {err}" if "kind" in section else f"{key}: {err}"]
        ) from None
    # models.base.Forecaster's interface, checked by its parts: the config (read by the data
    # stage too) imports no model, so a model's change redoes only the stages that run it
    if not all(callable(getattr(forecaster, a, None)) for a in ("fit", "predict", "from_config")):
        raise KeyedErrors([f"{key}.kind: {kind} is not a models.base.Forecaster"])
    if seeds is not None and not forecaster.stochastic:
        raise KeyedErrors([f"{key}.seeds: {kind} is deterministic (not stochastic): one seed"])
    if seeds is not None and (type(seeds) is not int or not 1 <= seeds <= MAX_SEEDS):
        raise KeyedErrors([f"{key}.seeds: an integer from 1 to {MAX_SEEDS}, got {echo(seeds)}"])
    model = parameters_model(forecaster)
    try:
        validated = model.model_validate(params)
    except ValidationError as err:
        raise KeyedErrors(error_lines(err, model, prefix=key)) from None
    return ForecasterSpec(name, kind, forecaster, validated, seeds or 1)


@functools.cache
def parameters_model(forecaster: type) -> type[BaseModel]:
    """The class's ``Config`` model, or one made from its constructor's keyword arguments.

    A constructor argument without a default is required; one without a type
    hint takes any value; ``seed`` is left out (the experiment's seed goes there).
    """
    if forecaster.Config is not None:
        return forecaster.Config
    try:
        hints = typing.get_type_hints(forecaster.__init__)
    except Exception:  # noqa: BLE001 -- unresolvable hints: take any value
        hints = {}
    fields: dict[str, Any] = {}
    for arg in inspect.signature(forecaster).parameters.values():
        if arg.name == "seed" or arg.kind in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD):
            continue
        default = ... if arg.default is arg.empty else arg.default
        fields[arg.name] = (hints.get(arg.name, Any), default)
    return create_model(
        f"{forecaster.__name__}Params",
        __config__=ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True),
        **fields,
    )
