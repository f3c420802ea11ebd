"""Experiment configuration: one YAML file per experiment, validated on load.

Every section is a pydantic model with ``extra="forbid"``, so a misspelled key
is an error that names it and suggests the closest valid key. Paths in the
config are relative to the repository root, whatever the working directory.

Stricter than YAML where YAML is lenient: a key given twice is an error;
integers and booleans are strict (``true`` is not an integer, ``"on"`` not a
boolean); dates stay text until pydantic reads them, so ``2012-13-45`` is an
error naming its key; a document whose aliases expand past
``MAX_CONFIG_VALUES`` values is refused before anything walks it. Every
error names the file or ``--set`` item and the key, echoes at most
``MAX_ECHO`` characters of what it was given, and ends the stage with exit
code 2 (``pipelines.cli.run_stage``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines.common.errors import ConfigError
from pipelines.common.paths import REPO_ROOT, is_plain_name
from pipelines.common.stages import FOLDERS
from pipelines.common.strategy_names import is_seed
from pipelines.config.forecasters import ForecastersConfig
from pipelines.config.sections import (
    BacktestConfig,
    DataConfig,
    ExecutorConfig,
    FeaturesConfig,
    ReportConfig,
    SearchConfig,
    Section,
    TrackingConfig,
    WalkForwardConfig,
)
from pipelines.config.strict_yaml import parse_yaml
from pipelines.config.validation import error_lines


class Config(Section):
    """One experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str
    seed: StrictInt = Field(42, ge=0)
    device: Literal["auto", "cpu", "gpu"] = "auto"
    deterministic: StrictBool = True
    output_directory: str = "build"
    data: DataConfig
    features: FeaturesConfig = FeaturesConfig()
    walkforward: WalkForwardConfig = WalkForwardConfig()
    forecasters: Annotated[
        ForecastersConfig,
        BeforeValidator(ForecastersConfig.parse),
        PlainSerializer(ForecastersConfig.dump),
    ] = Field(default_factory=lambda: ForecastersConfig.parse({}))
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    report: ReportConfig = ReportConfig()
    tracking: TrackingConfig = TrackingConfig()
    executor: ExecutorConfig = ExecutorConfig()
    search: SearchConfig = SearchConfig()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not is_plain_name(name):
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return name

    @field_validator("backtest")
    @classmethod
    def _top_k_fits_the_universe(cls, backtest: BacktestConfig, info: ValidationInfo):
        top_k, data = backtest.top_k, info.data.get("data")
        if top_k is not None and data is not None:
            need = top_k.k * (2 if top_k.short else 1)
            if need > len(data.instruments):
                raise ValueError(
                    f"top_k k={top_k.k}{' with short' if top_k.short else ''} needs at least "
                    f"{need} instruments, data.instruments has {len(data.instruments)}; "
                    "lower backtest.top_k.k"
                )
        return backtest

    @model_validator(mode="after")
    def _candidate_is_configured(self) -> Config:
        chosen = "candidate" in self.report.model_fields_set
        if chosen and self.report.candidate not in self.forecasters.enabled():
            raise ValueError(
                f"report.candidate: {self.report.candidate!r} is not a forecaster of this "
                f"config; give one of {', '.join(self.forecasters.enabled())}"
            )
        strategies = self.backtest.strategies
        chosen = "benchmark" in self.report.model_fields_set
        if chosen and self.report.benchmark not in strategies:
            raise ValueError(
                f"report.benchmark: {self.report.benchmark!r} is not a strategy of this "
                f"config; give one of {', '.join(strategies)}"
            )
        for name, spec in strategies.items():
            if name in self.forecasters.enabled():
                raise ValueError(
                    f"backtest.strategies.{name}: also the name of a forecaster (whose "
                    "forecast is traded under that name); rename the strategy"
                )
            if spec.forecaster is not None and spec.forecaster not in self.forecasters.enabled():
                raise ValueError(
                    f"backtest.strategies.{name}.forecaster: {spec.forecaster!r} is not a "
                    f"forecaster of this config; give one of {', '.join(self.forecasters)}"
                )
        return self

    # Resolved paths ---------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """A config path made absolute against the repository root."""
        p = Path(path)
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def run_directory(self) -> Path:
        """Where this experiment's stage outputs go: ``<output_directory>/<name>``."""
        return self.resolve(self.output_directory) / self.name

    def stage_directory(self, stage: str) -> Path:
        """Where ``stage`` writes its files: ``<run directory>/<its folder>``
        (``pipelines.common.stages.FOLDERS``)."""
        return self.run_directory / FOLDERS[stage]

    @property
    def report_directory(self) -> Path:
        return self.resolve(self.report.directory) / self.name

    def label(self, forecaster: str) -> str:
        """How the report calls a forecaster: its class's ``label`` ("LSTM") for a
        forecaster named after its kind, ``"<label> (<name>)"`` for a variant."""
        spec = self.forecasters.get(forecaster)
        if spec is None or not getattr(spec.cls, "label", None):
            return forecaster
        return spec.cls.label if forecaster == spec.kind else f"{spec.cls.label} ({forecaster})"

    def strategy_kind(self, name: str) -> str:
        """How the report groups a strategy: ``seed`` (one seed of a stochastic
        forecaster), the ``family`` its class declares for a strategy of
        ``backtest.strategies`` (``crossover``, ``benchmark``, ``rule``, ...), else
        ``forecast`` (a forecaster's forecast, traded)."""
        if is_seed(name):
            return "seed"
        spec = self.backtest.strategies.get(name)
        return spec.cls.family if spec is not None else "forecast"

    @property
    def candidate_label(self) -> str:
        """``label`` of ``report.candidate``."""
        return self.label(self.report.candidate)

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or f"gatecast-{self.name}"


# Loading ----------------------------------------------------------------------


def _format(err: ValidationError, source: str) -> str:
    return "\n".join(f"{source}: {line}" for line in error_lines(err, Config))


def parse_config(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a config mapping; raise ConfigError naming every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping of keys at the top level, got {type(raw).__name__}"
        )
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate a YAML experiment file.

    ``name`` defaults to the file's stem, so ``configs/smoke.yaml`` writes
    under ``build/smoke``. ``overrides`` is a nested mapping merged on top
    (used by tests and ``--set``).
    """
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = REPO_ROOT / p
    if not p.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; see configs/ for examples")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "save the file as UTF-8"
        ) from None
    raw = parse_yaml(text, str(p)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level")
    raw.setdefault("name", p.stem)
    if overrides:
        raw = _merge(raw, overrides)
    return parse_config(raw, source=str(p))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["a.b=3", "c=x"]`` -> ``{"a": {"b": 3}, "c": "x"}``.

    Values are read as YAML (strictly, as config files are); a value that is
    not valid YAML is taken as a string, so ``data.date_format=%m/%d/%Y`` is
    the text it looks like.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. forecasters.lstm.epochs=5")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} was already set to a value")
        try:
            node[leaf] = parse_yaml(value, f"--set {item}")
        except ConfigError:
            node[leaf] = value
    return out
