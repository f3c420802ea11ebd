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

import difflib
import functools
import inspect
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from core import registry
from pipelines.common.errors import ConfigError
from pipelines.common.paths import REPO_ROOT, is_plain_name
from pipelines.config.strict_yaml import echo, parse_yaml


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


class FeaturesConfig(_Section):
    """Model inputs built from the bars (known at each bar's close)."""

    window: StrictInt = Field(30, ge=2, le=512, description="bars of history per LSTM sample")
    use_volume: StrictBool = True
    use_range: StrictBool = True


class WalkForwardConfig(_Section):
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


# Forecasters: registered components, configured by name ---------------------------

#: Forecasters every config runs unless it sets them to null: the naive random walk,
#: the benchmark of every forecast metric (Theil's U2, Diebold-Mariano).
DEFAULT_FORECASTERS: dict[str, dict[str, Any]] = {"random_walk": {}}
#: The most seeds a stochastic forecaster runs (``forecasters.<name>.seeds``).
MAX_SEEDS = 50


class KeyedErrors(ValueError):
    """Several bad keys at once: each line names its full dotted key (the source is added)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


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


class SizingConfig(_Section):
    percent: float = Field(95.0, gt=0, le=100, description="percent of equity per position")
    fractional: StrictBool = False


class CrossoverConfig(_Section):
    fast: StrictInt = Field(ge=1)
    slow: StrictInt = Field(ge=2)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> CrossoverConfig:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        return self


class TopKConfig(_Section):
    """The top-k portfolio over the universe (``strategies.topk.TopK``), one per forecaster.

    Each bar, long the ``k`` instruments with the highest expected return
    (equal parts of ``sizing.percent`` of equity); with ``short``, also short
    the bottom ``k``. Run by the backtest stage beside an equal-weight
    buy-and-hold of the universe, on the instruments' common dates.
    """

    k: StrictInt = Field(2, ge=1, description="instruments in each book")
    short: StrictBool = Field(False, description="also short the bottom k")


class BacktestConfig(_Section):
    """Execution model shared by every strategy: fills at the next bar's open."""

    cash: float = Field(100_000.0, gt=0)
    commission: float = Field(0.001, ge=0, lt=0.1, description="fraction of traded value")
    commission_fixed: float = Field(0.0, ge=0, description="per order, in cash")
    slippage: float = Field(0.0005, ge=0, lt=0.1, description="fraction of price")
    sizing: SizingConfig = SizingConfig()
    entry_threshold: float = Field(0.0, ge=0, description="expected return needed to go long")
    exit_threshold: float = Field(0.0, le=0, description="expected return below which to exit")
    allow_short: StrictBool = False
    sma_crossover: CrossoverConfig | None = CrossoverConfig(fast=20, slow=50)
    ema_crossover: CrossoverConfig | None = CrossoverConfig(fast=12, slow=26)
    buy_and_hold: StrictBool = True
    top_k: TopKConfig | None = Field(
        None, description="top-k portfolio over the universe (null = off); e.g. {k: 2}"
    )


class BootstrapConfig(_Section):
    samples: StrictInt = Field(1000, ge=100)
    block: StrictInt = Field(20, ge=1, description="stationary-bootstrap mean block length in bars")


class ReportConfig(_Section):
    directory: str = "reports"
    cost_sweep_bp: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0, 5, 10, 20, 30, 50],
        description="commissions in basis points (>= 0) for the cost sweep",
    )
    bootstrap: BootstrapConfig = BootstrapConfig()
    significance: float = Field(0.05, gt=0, lt=0.5)
    candidate: str = Field(
        "lstm",
        description="the forecaster (a name under forecasters:) the report judges against "
        "the others and buy-and-hold",
    )


class TrackingConfig(_Section):
    experiment: str | None = Field(None, description="MLflow experiment; null = gatecast-<name>")
    registered_model: str = "gatecast-lstm"
    charts: StrictBool = Field(
        True,
        description=(
            "PNG charts logged with the runs: each LSTM's loss and gates (train) and "
            "Backtrader's charts (backtest); false for a universe of hundreds of "
            "instruments, where drawing them is most of the driver's serial work"
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


class ExecutorConfig(_Section):
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
    fraction shares one).
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
            for key in ("address", "cpus_per_unit", "gpus_per_lstm_unit")
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


class SearchValidation(_Section):
    """Where a search trial is scored, never on a test fold: the last ``fraction`` of the
    *first* walk-forward fold's training bars (before any test date, less the embargo), cut
    into ``folds`` consecutive slices; each is forecast by a fit on the bars before it.
    Later folds' training bars hold earlier folds' test bars, so they are not used."""

    fraction: float = Field(0.2, gt=0, lt=0.8, description="share of the first training bars")
    folds: StrictInt = Field(1, ge=1, le=20, description="validation slices in that share")


class SearchSpace(_Section):
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


class SearchConfig(_Section):
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


class Config(_Section):
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
    backtest: BacktestConfig = BacktestConfig()
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

    @property
    def candidate_label(self) -> str:
        """``label`` of ``report.candidate``."""
        return self.label(self.report.candidate)

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


def _model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model under ``root`` that owns the key at ``loc`` (for suggestions)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        args = getattr(ann, "__args__", (ann,))
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def error_lines(err: ValidationError, root: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per error of validating ``root``, each naming its full dotted key.

    ``prefix`` is where ``root`` sits in the config (``forecasters.sma_50`` for a
    forecaster's parameters); the forecasters' own lines pass through as they are.
    """
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join([*filter(None, [prefix]), *(str(p) for p in loc)]) or "<top level>"
        keyed = e.get("ctx", {}).get("error")
        if isinstance(keyed, KeyedErrors):
            lines.extend(keyed.lines)
        elif e["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}{_suggest(str(loc[-1]), _model_at(loc, root))}")
        elif e["type"] == "missing":
            lines.append(f"missing required key {key!r}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg} (got {echo(e.get('input'))})")
    return lines


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
