"""The sections of a config, one pydantic model each (every key documented in
docs/configuration.md)."""

from __future__ import annotations

import warnings
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines.common.paths import is_plain_name
from pipelines.config.strategies import SHORTHANDS, StrategiesConfig, load_strategy
from pipelines.config.validation import KeyedErrors


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskFreeConfig(Section):
    """Risk-free rate for Sharpe/Sortino: a constant annual rate or a FRED series."""

    source: Literal["constant", "fred"] = "constant"
    rate: float = Field(0.0, ge=-0.05, le=0.5, description="annual rate when source=constant")
    series: str = Field("DTB3", description="FRED series (percent, annualised) when source=fred")


class DataConfig(Section):
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
    long_gaps: Literal["warn", "error"] = Field(
        "warn", description="a gap of more than max_gap_days inside daily bars: warn or refuse"
    )
    max_gap_days: StrictInt = Field(31, ge=1, description="calendar days; longer is a long gap")
    periods_per_year: float | None = Field(
        None, gt=0, description="bars per year; null = 252 for daily equity bars, else measured"
    )
    cache_directory: str = "data/cache"
    risk_free: RiskFreeConfig = RiskFreeConfig()

    @field_validator("instruments")
    @classmethod
    def _safe_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not is_plain_name(name):
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


class FeaturesConfig(Section):
    """Model inputs built from the bars (known at each bar's close)."""

    window: StrictInt = Field(30, ge=2, le=512, description="bars of history per LSTM sample")
    use_volume: StrictBool = True
    use_range: StrictBool = True


class WalkForwardConfig(Section):
    """Walk-forward splits: every forecaster is refit on each fold's training segment."""

    scheme: Literal["expanding", "rolling"] = "expanding"
    train_bars: StrictInt = Field(
        750, ge=50, description="first (expanding) or every (rolling) train length"
    )
    test_bars: StrictInt = Field(
        250, ge=1, description="out-of-sample bars per fold = retrain frequency"
    )
    folds: StrictInt | None = Field(
        None, ge=1, description="keep only the last N folds; null = all"
    )
    embargo: StrictInt = Field(0, ge=0, description="bars dropped between train end and test start")


class SizingConfig(Section):
    percent: float = Field(95.0, gt=0, le=100, description="percent of equity per position")
    fractional: StrictBool = False


class TopKConfig(Section):
    """The top-k portfolio over the universe (``strategies.topk.TopK``), one per forecaster.

    Each bar, long the ``k`` instruments with the highest expected return
    (equal parts of ``sizing.percent`` of equity); with ``short``, also short
    the bottom ``k``. Run by the backtest stage beside an equal-weight
    buy-and-hold of the universe, on the instruments' common dates.
    """

    k: StrictInt = Field(2, ge=1, description="instruments in each book")
    short: StrictBool = Field(False, description="also short the bottom k")


class BacktestConfig(Section):
    """Execution model shared by every strategy (fills at the next bar's open), and the
    strategies (``pipelines.config.strategies``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    cash: float = Field(100_000.0, gt=0)
    commission: float = Field(0.001, ge=0, lt=0.1, description="fraction of traded value")
    commission_fixed: float = Field(0.0, ge=0, description="per order, in cash")
    slippage: float = Field(0.0005, ge=0, lt=0.1, description="fraction of price")
    sizing: SizingConfig = SizingConfig()
    entry_threshold: float = Field(0.0, ge=0, description="expected return needed to go long")
    exit_threshold: float = Field(0.0, le=0, description="expected return below which to exit")
    allow_short: StrictBool = False
    forecast_strategy: str = Field(
        "forecast",
        description="the registered strategy that trades every forecaster's forecast",
    )
    strategies: Annotated[
        StrategiesConfig,
        BeforeValidator(StrategiesConfig.parse),
        PlainSerializer(StrategiesConfig.dump),
    ] = Field(default_factory=lambda: StrategiesConfig.parse({}))
    top_k: TopKConfig | None = Field(
        None, description="top-k portfolio over the universe (null = off); e.g. {k: 2}"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """``sma_crossover``, ``ema_crossover`` and ``buy_and_hold`` set entries of
        ``strategies`` (``pipelines.config.strategies``)."""
        if not isinstance(data, dict) or not any(k in data for k in SHORTHANDS):
            return data
        data = dict(data)
        given = {k: data.pop(k) for k in SHORTHANDS if k in data}
        data["strategies"] = StrategiesConfig.parse(data.get("strategies"), given)
        return data

    @field_validator("forecast_strategy")
    @classmethod
    def _trades_forecasts(cls, kind: str) -> str:
        strategy = load_strategy(kind, "backtest.forecast_strategy")
        if not strategy.trades_forecast:
            raise KeyedErrors([f"backtest.forecast_strategy: {kind} does not trade a forecast"])
        return kind


class BootstrapConfig(Section):
    samples: StrictInt = Field(1000, ge=100)
    block: StrictInt = Field(20, ge=1, description="stationary-bootstrap mean block length in bars")


class ReportConfig(Section):
    directory: str = "reports"
    cost_sweep_bp: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0, 5, 10, 20, 30, 50],
        description="commissions in basis points (>= 0) for the cost sweep",
    )
    bootstrap: BootstrapConfig = BootstrapConfig()
    significance: float = Field(0.05, gt=0, lt=0.5)
    benchmark: str = Field(
        "buy_and_hold",
        description="the strategy (a name under backtest.strategies) every strategy's Sharpe "
        "ratio is compared with",
    )
    candidate: str = Field(
        "lstm",
        description="the forecaster (a name under forecasters:) the report judges against "
        "the others and buy-and-hold",
    )


# The field ``register`` hides ``ABCMeta.register`` (pydantic's models are abstract base
# classes), a class method no config uses: pydantic's warning about it says nothing here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", 'Field name "register"', UserWarning)

    class TrackingConfig(Section):
        experiment: str | None = Field(
            None, description="MLflow experiment; null = gatecast-<name>"
        )
        registered_model: str = "gatecast-lstm"
        charts: StrictBool = Field(
            True,
            description=(
                "PNG charts logged with the runs: each LSTM's loss and gates (train) and "
                "Backtrader's charts (backtest); false for a universe of hundreds of "
                "instruments, where drawing them is most of the driver's serial work"
            ),
        )
        register: Literal["all", "final", "none"] = Field(
            "final",
            description=(
                "models of the forecasters that declare export, logged and registered: the "
                "final walk-forward fold's (final), every fold's (all: a version per fold, "
                "the final fold's last), or none (none: no model is kept)"
            ),
        )

        @field_validator("experiment", "registered_model")
        @classmethod
        def _plain_name(cls, name: str | None) -> str | None:
            # The experiment names a folder of the artifact store: it must stay inside it.
            if name is not None and not is_plain_name(name, max_length=200):
                raise ValueError(
                    "use letters, digits and '.', '_', '-', '^', '=' only (no path separators, "
                    "no '..'), at most 200 characters"
                )
            return name


class ExecutorConfig(Section):
    """How the train and backtest stages run their units of work.

    A train unit is one forecaster (one seed of the LSTM) on one fold of one
    instrument; a backtest unit is one strategy on one instrument, with its cost sweep.

    ``kind: sequential`` (the default) runs them one after another in the stage's
    own process. ``kind: local`` runs them in a pool of ``workers`` processes on
    this machine (null = one per CPU core), each with ``cores // workers``
    TensorFlow threads (at least one) so the pool does not oversubscribe the
    cores. ``kind: ray`` makes each unit a Ray task (``pipelines.execution.ray_executor``;
    needs the ``ray`` extra): on the cluster at ``address`` (or ``RAY_ADDRESS``),
    else on a local Ray started for the stage on the loopback address with
    ``workers`` CPUs (null = every core); each task asks for ``cpus_per_unit``
    CPUs (also its TensorFlow threads) and, when the models run on a GPU, each
    LSTM unit and search trial for ``gpus_per_lstm_unit`` GPUs (null = 1; a
    fraction shares one). A unit whose worker or node dies runs again, up to ``retries``
    times; units that no live node can run (their node was lost) fail, named, after
    ``wait_for_node_seconds``.
    Every kind gives bit-identical forecasts and metrics: a unit carries every
    setting its numbers depend on, so its result does not depend on the process
    it runs in (``pipelines.execution.units``, ``pipelines.execution.executors``).
    """

    kind: Literal["sequential", "local", "ray"] = "sequential"
    workers: StrictInt | None = Field(
        None,
        ge=1,
        description="processes for kind=local, CPUs of a local Ray; null = one per CPU core",
    )
    address: str | None = Field(
        None, description="kind=ray: a Ray cluster to connect to; null = RAY_ADDRESS or a local Ray"
    )
    cpus_per_unit: float = Field(
        1.0, gt=0, description="kind=ray: CPUs (and TensorFlow threads) each unit asks for"
    )
    gpus_per_lstm_unit: float | None = Field(
        None,
        ge=0,
        description="kind=ray, device on a GPU: GPUs each LSTM unit or trial asks for; null = 1",
    )
    retries: StrictInt = Field(
        3, ge=0, description="kind=ray: runs again of a unit whose worker or node died"
    )
    wait_for_node_seconds: float | None = Field(
        60.0,
        gt=0,
        description="kind=ray: how long units wait while no live node has the CPUs (GPUs) "
        "they ask for before the stage gives them up as failed; null = for ever",
    )

    @model_validator(mode="after")
    def _workers_need_a_pool(self) -> ExecutorConfig:
        if self.kind == "sequential" and self.workers not in (None, 1):
            raise ValueError(
                f"workers={self.workers} needs a process pool: set executor.kind: local "
                "(or drop executor.workers)"
            )
        # set to anything but its default (a dumped and reloaded config sets them all)
        ray_only = [
            key
            for key in (
                "address",
                "cpus_per_unit",
                "gpus_per_lstm_unit",
                "retries",
                "wait_for_node_seconds",
            )
            if getattr(self, key) != type(self).model_fields[key].default
        ]
        if self.kind != "ray" and ray_only:
            raise ValueError(
                f"executor.{ray_only[0]} is for Ray: set executor.kind: ray "
                f"(or drop executor.{ray_only[0]})"
            )
        if self.address is not None and self.workers is not None:
            raise ValueError(
                "executor.workers sizes a local Ray; a cluster at executor.address has its "
                "own CPUs: drop one of the two"
            )
        return self


# Bounds of the search ranges: those of the recurrent forecasters' own settings.
_SPACE_LIMITS = {"units": (1, 4096), "layers": (1, 8), "window": (2, 512), "epochs": (1, 10_000)}
_SPACE_LIMITS |= {"dropout": (0.0, 0.999), "learning_rate": (1e-8, 0.999)}


class SearchValidation(Section):
    """Where a search trial is scored, never on a test fold: the last ``fraction`` of the
    *first* walk-forward fold's training bars (before any test date, less the embargo), cut
    into ``folds`` consecutive slices; each is forecast by a fit on the bars before it.
    Later folds' training bars hold earlier folds' test bars, so they are not used."""

    fraction: float = Field(0.2, gt=0, lt=0.8, description="share of the first training bars")
    folds: StrictInt = Field(1, ge=1, le=20, description="validation slices in that share")


class SearchSpace(Section):
    """The settings searched: ``[low, high]`` (inclusive; ``learning_rate`` on a log
    scale) or, for ``batch_size``, the choices. ``null`` keeps the config's value
    (``forecasters.<search.forecaster>.*``; ``window`` is ``features.window``); each
    other than ``window`` must be a parameter of the searched forecaster. ``units`` is
    per layer, ``layers`` the number of recurrent layers (all of the same width)."""

    units: list[StrictInt] | None = Field(default_factory=lambda: [16, 64])
    layers: list[StrictInt] | None = Field(default_factory=lambda: [1, 2])
    window: list[StrictInt] | None = Field(default_factory=lambda: [10, 40])
    dropout: list[float] | None = Field(default_factory=lambda: [0.0, 0.3])
    learning_rate: list[float] | None = Field(default_factory=lambda: [1e-4, 1e-2])
    batch_size: list[StrictInt] | None = Field(default_factory=lambda: [32, 64, 128])
    epochs: list[StrictInt] | None = Field(default_factory=lambda: [5, 30])

    @field_validator("units", "layers", "window", "dropout", "learning_rate", "epochs")
    @classmethod
    def _a_range(cls, bounds: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if bounds is None:
            return None
        low_limit, high_limit = _SPACE_LIMITS[str(info.field_name)]
        if len(bounds) != 2:
            raise ValueError(f"give [low, high], got {len(bounds)} value(s)")
        if bounds[0] > bounds[1]:
            raise ValueError(f"low ({bounds[0]}) must not be above high ({bounds[1]})")
        if bounds[0] < low_limit or bounds[1] > high_limit:
            raise ValueError(f"must lie within [{low_limit:g}, {high_limit:g}]")
        return bounds

    @field_validator("batch_size")
    @classmethod
    def _choices(cls, choices: list[int] | None) -> list[int] | None:
        if choices is not None and (
            not choices or min(choices) < 1 or len(set(choices)) != len(choices)
        ):
            raise ValueError("give one or more different batch sizes, each at least 1")
        return choices


class SearchConfig(Section):
    """Hyperparameter search of ``forecaster`` (``pipelines.stages.search``); ``trials: 0``
    runs none.

    A TPE sampler seeded with ``seed`` (null: ``seed`` above) proposes ``trials``
    configurations from ``space``, scored by ``metric`` on ``validation`` slices of
    ``instruments`` (null: all): ``theil_u2`` (forecast RMSE / the random walk's) or
    ``val_loss`` (best early-stopping loss); lower is better. The best one is trained, and
    the report's deflated Sharpe ratio counts every trial scored."""

    forecaster: str = Field(
        "lstm", description="the forecaster searched (a name under forecasters:)"
    )
    trials: StrictInt = Field(0, ge=0, le=10_000, description="configurations to try; 0 = none")
    seed: StrictInt | None = Field(None, ge=0, description="sampler seed; null = seed")
    instruments: list[str] | None = Field(None, min_length=1, description="null = all")
    metric: Literal["theil_u2", "val_loss"] = "theil_u2"
    validation: SearchValidation = SearchValidation()
    space: SearchSpace = SearchSpace()
