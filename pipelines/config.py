"""Experiment configuration: one YAML file per experiment, validated on load.

Every section is a pydantic model with ``extra="forbid"``, so a misspelled key
is an error that names it and suggests the closest valid key. Paths in the
config are relative to the repository root, whatever the working directory.
"""

from __future__ import annotations

import difflib
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._^=-]{0,63}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskFreeConfig(_Section):
    """Risk-free rate for Sharpe/Sortino: a constant annual rate or a FRED series."""

    source: Literal["constant", "fred"] = "constant"
    rate: float = Field(0.0, ge=-0.05, le=0.5, description="annual rate when source=constant")
    series: str = Field("DTB3", description="FRED series (percent, annualised) when source=fred")


class DataConfig(_Section):
    """Where the bars come from and which price series is used."""

    source: Literal["csv", "yfinance", "fred"] = "csv"
    directory: str = "data/sample"
    instruments: list[str] = Field(min_length=1)
    start: date | None = None
    end: date | None = None
    price: Literal["adjusted", "raw"] = "adjusted"
    date_format: str | None = None
    null_rows: Literal["drop", "error"] = "drop"
    unsorted_rows: Literal["sort", "error"] = "sort"
    cache_directory: str = "data/cache"
    risk_free: RiskFreeConfig = RiskFreeConfig()

    @field_validator("instruments")
    @classmethod
    def _safe_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _NAME.match(name) or ".." in name:
                raise ValueError(
                    f"instrument name {name!r} is not a plain ticker: use letters, digits and "
                    "'.', '_', '-', '^', '=' only (no path separators)"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"instrument names repeat: {names}")
        return names

    @model_validator(mode="after")
    def _dates_ordered(self) -> DataConfig:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start ({self.start}) must not be after end ({self.end})")
        return self


class FeaturesConfig(_Section):
    """Model inputs built from the bars (known at each bar's close)."""

    window: int = Field(30, ge=2, le=512, description="bars of history per LSTM sample")
    use_volume: bool = True
    use_range: bool = True


class WalkForwardConfig(_Section):
    """Walk-forward splits: every forecaster is refit on each fold's training segment."""

    scheme: Literal["expanding", "rolling"] = "expanding"
    train_bars: int = Field(
        750, ge=50, description="first (expanding) or every (rolling) train length"
    )
    test_bars: int = Field(250, ge=1, description="out-of-sample bars per fold = retrain frequency")
    folds: int | None = Field(None, ge=1, description="keep only the last N folds; null = all")
    embargo: int = Field(0, ge=0, description="bars dropped between train end and test start")


class RandomWalkConfig(_Section):
    pass


class SmaForecasterConfig(_Section):
    window: int = Field(20, ge=1)


class EmaForecasterConfig(_Section):
    span: int = Field(20, ge=1)


class KalmanConfig(_Section):
    trend: bool = False


class OlsConfig(_Section):
    lags: int = Field(5, ge=1, le=100)
    window: int | None = Field(None, ge=10, description="rolling window in bars; null = expanding")


class LstmConfig(_Section):
    units: list[int] = Field(default_factory=lambda: [32], min_length=1)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    patience: int = Field(3, ge=1)
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    seeds: int = Field(1, ge=1, le=50, description="independent seeds reported as mean ± std")

    @field_validator("units")
    @classmethod
    def _positive_units(cls, units: list[int]) -> list[int]:
        if any(u < 1 for u in units):
            raise ValueError(f"every layer needs at least 1 unit, got {units}")
        return units


class ForecastersConfig(_Section):
    """Forecasters to run; leave one out (or set it to null) to skip it."""

    random_walk: RandomWalkConfig | None = RandomWalkConfig()
    sma: SmaForecasterConfig | None = None
    ema: EmaForecasterConfig | None = None
    kalman: KalmanConfig | None = None
    ols: OlsConfig | None = None
    lstm: LstmConfig | None = None

    def enabled(self) -> dict[str, _Section]:
        """Enabled forecasters by name, in a fixed order."""
        return {name: cfg for name, cfg in self if cfg is not None}


class SizingConfig(_Section):
    percent: float = Field(95.0, gt=0, le=100, description="percent of equity per position")
    fractional: bool = False


class CrossoverConfig(_Section):
    fast: int = Field(ge=1)
    slow: int = Field(ge=2)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> CrossoverConfig:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        return self


class BacktestConfig(_Section):
    """Execution model shared by every strategy: fills at the next bar's open."""

    cash: float = Field(100_000.0, gt=0)
    commission: float = Field(0.001, ge=0, lt=0.1, description="fraction of traded value")
    commission_fixed: float = Field(0.0, ge=0, description="per order, in cash")
    slippage: float = Field(0.0005, ge=0, lt=0.1, description="fraction of price")
    sizing: SizingConfig = SizingConfig()
    entry_threshold: float = Field(0.0, ge=0, description="expected return needed to go long")
    exit_threshold: float = Field(0.0, le=0, description="expected return below which to exit")
    allow_short: bool = False
    sma_crossover: CrossoverConfig | None = CrossoverConfig(fast=20, slow=50)
    ema_crossover: CrossoverConfig | None = CrossoverConfig(fast=12, slow=26)
    buy_and_hold: bool = True


class BootstrapConfig(_Section):
    samples: int = Field(1000, ge=100)
    block: int = Field(20, ge=1, description="stationary-bootstrap mean block length in bars")


class ReportConfig(_Section):
    directory: str = "reports"
    cost_sweep_bp: list[float] = Field(default_factory=lambda: [0, 5, 10, 20, 30, 50])
    bootstrap: BootstrapConfig = BootstrapConfig()
    significance: float = Field(0.05, gt=0, lt=0.5)


class TrackingConfig(_Section):
    experiment: str | None = Field(None, description="MLflow experiment; null = gatecast-<name>")
    registered_model: str = "gatecast-lstm"


class Config(_Section):
    """One experiment."""

    name: str
    seed: int = Field(42, ge=0)
    device: Literal["auto", "cpu", "gpu"] = "auto"
    deterministic: bool = True
    output_directory: str = "build"
    data: DataConfig
    features: FeaturesConfig = FeaturesConfig()
    walkforward: WalkForwardConfig = WalkForwardConfig()
    forecasters: ForecastersConfig = ForecastersConfig()
    backtest: BacktestConfig = BacktestConfig()
    report: ReportConfig = ReportConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not _NAME.match(name) or ".." in name:
            raise ValueError("use letters, digits, '.', '_' and '-' only")
        return name

    # Resolved paths ---------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """A config path made absolute against the repository root."""
        p = Path(path)
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def run_directory(self) -> Path:
        """Where this experiment's stage outputs go: ``<output_directory>/<name>``."""
        return self.resolve(self.output_directory) / self.name

    @property
    def report_directory(self) -> Path:
        return self.resolve(self.report.directory) / self.name

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or f"gatecast-{self.name}"


# Loading ----------------------------------------------------------------------


def _suggest(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
    return (
        f"; did you mean {close[0]!r}?"
        if close
        else f"; valid keys: {', '.join(model.model_fields)}"
    )


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at ``loc`` (for suggestions)."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        args = getattr(ann, "__args__", (ann,))
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _format(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "<top level>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key {key!r}{_suggest(str(loc[-1]), _model_at(loc))}")
        elif e["type"] == "missing":
            lines.append(f"{source}: missing required key {key!r}")
        else:
            given = e.get("input")
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {key}: {msg} (got {given!r})")
    return "\n".join(lines)


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
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
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
    """``["a.b=3", "c=x"]`` -> ``{"a": {"b": 3}, "c": "x"}`` (values parsed as YAML)."""
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
        node[leaf] = yaml.safe_load(value)
    return out
