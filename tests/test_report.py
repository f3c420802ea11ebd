"""The report stage on synthetic stage outputs: comparison, verdicts, atomic output, rendering."""

from __future__ import annotations

import ast
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.metrics import forecast_metrics
from pipelines.config import load_config
from pipelines.report import comparison, stats
from pipelines.report import inputs as report_inputs
from pipelines.report.verdict import headline, universe_headline, verdict
from pipelines.stages import report
from pipelines.tracking import store as tracking_store
from strategies.metrics import compute_metrics

WARMUP = 40
SWEEP_BP = [0.0, 10.0, 20.0, 50.0]
# every instrument's charts with a PNG beside the page (pooled: equity, drawdown, cost sweep)
CHART_PNGS = (
    "equity",
    "drawdown",
    "forecast",
    "cost_sweep",
    "gates",
    "gate_folds",
    "gate_volatility",
    "trades",
    "cumulative",
    "rolling_sharpe",
    "distribution",
)


def _equity(returns: np.ndarray, dates: pd.DatetimeIndex) -> pd.Series:
    return pd.Series(100_000 * np.concatenate([[1.0], np.cumprod(1 + returns)]), index=dates)


def _run(equity: pd.Series, pnl: list[float]) -> report_inputs.StrategyRun:
    trades = pd.DataFrame({"pnl_net": pd.Series(pnl, dtype=float)})
    orders = pd.DataFrame(
        {
            "status": ["filled"] * len(pnl),
            "value": [1e5] * len(pnl),
            "commission": [50.0] * len(pnl),
        }
    )
    positions = pd.Series(1.0, index=equity.index)
    metrics = {k: float(v) for k, v in compute_metrics(equity, positions, trades, orders).items()}
    return report_inputs.StrategyRun(metrics, equity, equity.pct_change().iloc[1:], np.array(pnl))


def make_instrument(
    name: str,
    seed: int,
    days: int = 260,
    start: str = "2020-01-01",
    extra: tuple[str, ...] = (),
    units: int = 4,
):
    """Bars, forecasts, backtests and gates of one synthetic instrument.

    ``extra`` adds more strategies (forecasters get a forecast column too), drawn from
    their own generator so the others' numbers do not move."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, periods=WARMUP + days + 1, name="date")
    close = 100 * np.cumprod(1 + rng.normal(0.0004, 0.01, len(dates)))
    frame = pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1e6},
        index=dates,
    )
    oos = dates[WARMUP:]
    frame["random_walk"] = np.where(dates >= oos[0], close, np.nan)
    for col, noise in (("lstm_seed0", 0.004), ("lstm_seed1", 0.005), ("sma", 0.006)):
        frame[col] = np.where(
            dates >= oos[0], close * (1 + rng.normal(0, noise, len(dates))), np.nan
        )
    frame["lstm"] = frame[["lstm_seed0", "lstm_seed1"]].mean(axis=1)

    actual = frame["close"].shift(-1).loc[oos]
    fmetrics = {
        c: forecast_metrics(actual, frame[c].loc[oos], frame["random_walk"].loc[oos])
        for c in ("random_walk", "sma", "lstm", "lstm_seed0", "lstm_seed1")
    }
    bh = pd.Series(close, index=dates).loc[oos].pct_change().iloc[1:].to_numpy()
    runs = {"buy_and_hold": _run(_equity(bh, oos), [3000.0])}
    for k, strategy in enumerate(["lstm", "lstm_seed0", "lstm_seed1", "sma", "sma_crossover"]):
        r = 0.6 * bh + rng.normal(0.0002 * (k - 2), 0.006, days)
        runs[strategy] = _run(_equity(r, oos), list(rng.normal(100, 500, 6)))
    more = np.random.default_rng(seed + 1000)
    for k, strategy in enumerate(extra):
        if not strategy.endswith("crossover"):
            noise = more.normal(0, 0.006, len(dates))
            frame[strategy] = np.where(dates >= oos[0], close * (1 + noise), np.nan)
            fmetrics[strategy] = forecast_metrics(
                actual, frame[strategy].loc[oos], frame["random_walk"].loc[oos]
            )
        r = 0.6 * bh + more.normal(0.0001 * k, 0.006, days)
        runs[strategy] = _run(_equity(r, oos), list(more.normal(100, 500, 6)))
    n = days + 1
    gates = pd.DataFrame(
        {
            "date": oos.repeat(units),
            "fold": np.repeat((np.arange(n) >= 130).astype(int), units),
            "unit": np.tile(np.arange(units), n),
            "forget": rng.uniform(0.4, 0.9, n * units),
            "input": rng.uniform(0.1, 0.6, n * units),
            "output": rng.uniform(0.3, 0.8, n * units),
            "cell": rng.normal(0, 0.5, n * units),
        }
    )
    return report_inputs.InstrumentData(
        name=name,
        frame=frame,
        oos_start=oos[0],
        oos_end=oos[-1],
        forecast_metrics=fmetrics,
        runs=runs,
        gates=gates,
        fold_starts=[oos[0], oos[130]],
    )


def make_trades(inst):
    """A trade log per strategy, in the backtest stage's columns: long round trips of 10 bars
    every 40 bars on the close, the last one still open."""
    close = inst.frame.loc[inst.oos_start :, "close"]
    logs = {}
    for k, strategy in enumerate(inst.runs):
        rows = []
        for start in range(k, len(close) - 11, 40):
            entry, exit_ = close.index[start], close.index[start + 10]
            size = 900.0 + k
            last = start + 40 > len(close) - 11
            exit_price = close.iloc[start + 10]
            pnl = size * (exit_price - close.iloc[start])
            rows.append(
                (entry, pd.NaT if last else exit_, size, close.iloc[start], exit_price, pnl,
                 10.0, pnl - 10.0, 10, last)
            )  # fmt: skip
        logs[strategy] = pd.DataFrame(
            rows,
            columns=["entry_date", "exit_date", "size", "entry_price", "exit_price", "pnl",
                     "commission", "pnl_net", "bars", "open"],
        )  # fmt: skip
    return logs


def make_sweep(instruments):
    """Sharpe falls by 0.02 per bp for every strategy, by 0.001 per bp for buy-and-hold."""
    out = {}
    for bp in SWEEP_BP:
        out[bp] = {}
        for inst in instruments:
            by = {}
            for name, run in inst.runs.items():
                if name.startswith("lstm_seed"):
                    continue
                slope = 0.001 if name == "buy_and_hold" else 0.02
                by[name] = (run.metrics["sharpe"] - slope * bp, run.returns - bp * 1e-6)
            out[bp][inst.name] = by
    return out


@pytest.fixture
def cfg(tmp_path):
    return _synthetic_cfg(tmp_path)


@pytest.fixture
def instruments():
    # BBB's out-of-sample period starts where AAA's ends: pooling must not need overlap
    return [make_instrument("AAA", 1), make_instrument("BBB", 2, start="2021-01-01")]


# Comparison -------------------------------------------------------------------------------


def test_league_rows_and_statistics(cfg, instruments):
    comp = comparison.compare(cfg, instruments, make_sweep(instruments))
    league = comp.league
    assert set(league["instrument"]) == {"AAA", "BBB", "pooled"}
    assert comp.n_trials == 12  # 6 strategy configurations (seeds included) x 2 instruments
    assert (league["dsr_trials"] == 12).all()
    aaa = league[league["instrument"] == "AAA"].set_index("strategy")
    assert aaa.loc["lstm", "sharpe"] == instruments[0].runs["lstm"].metrics["sharpe"]
    # PSR and the Sharpe difference come from the same daily returns as the backtest
    r = instruments[0].runs["lstm"].returns.to_numpy()
    assert aaa.loc["lstm", "psr"] == pytest.approx(stats.probabilistic_sharpe_ratio(r))
    bh = instruments[0].runs["buy_and_hold"].returns.to_numpy()
    expected = stats.sharpe_ratio(r, 252) - stats.sharpe_ratio(bh, 252)
    assert aaa.loc["lstm", "sharpe_diff"] == pytest.approx(expected)
    assert aaa.loc["lstm", "sharpe_diff_low"] < expected < aaa.loc["lstm", "sharpe_diff_high"]
    assert math.isnan(aaa.loc["buy_and_hold", "sharpe_diff"])
    assert aaa.loc["lstm", "dsr"] < aaa.loc["lstm", "psr"]
    # forecast metrics side by side, only for forecast strategies
    assert aaa.loc["lstm", "rmse"] == instruments[0].forecast_metrics["lstm"]["rmse"]
    assert math.isnan(aaa.loc["sma_crossover", "rmse"])


def test_break_even_from_the_sweep(cfg, instruments):
    comp = comparison.compare(cfg, instruments, make_sweep(instruments))
    aaa = comp.league[comp.league["instrument"] == "AAA"].set_index("strategy")
    for name in ("lstm", "sma", "sma_crossover"):
        edge0 = aaa.loc[name, "sharpe"] - aaa.loc["buy_and_hold", "sharpe"]
        # edge(bp) = edge0 - 0.019 bp -> zero at edge0 / 0.019 when that is inside 0..50
        if edge0 <= 0:
            assert aaa.loc[name, "break_even"] == "no edge"
        elif edge0 / 0.019 > 50:
            assert aaa.loc[name, "break_even"] == "> 50 bp"
        else:
            assert aaa.loc[name, "break_even_bp"] == pytest.approx(edge0 / 0.019, rel=1e-9)
    assert set(comp.sweep["cost_bp"]) == set(SWEEP_BP)
    assert "pooled" in set(comp.sweep["instrument"])


def test_seeds_mean_and_std(cfg, instruments):
    comp = comparison.compare(cfg, instruments, None)
    sharpes = [instruments[0].runs[f"lstm_seed{k}"].metrics["sharpe"] for k in (0, 1)]
    mean, std = comp.seeds["AAA"]["sharpe"]
    assert mean == pytest.approx(np.mean(sharpes)) and std == pytest.approx(np.std(sharpes, ddof=1))
    lstm = comp.league.set_index(["instrument", "strategy"]).loc[("AAA", "lstm")]
    assert lstm["seeds"] == 2 and lstm["sharpe_seed_std"] == pytest.approx(std)


def test_pooled_is_a_calendar_time_equal_weight_portfolio(cfg):
    a = pd.Series(
        [0.01, 0.02, -0.01], index=pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06"])
    )
    b = pd.Series([0.03, 0.00], index=pd.to_datetime(["2020-01-03", "2020-01-07"]))
    pooled = comparison.pooled_returns({"A": a, "B": b})
    expected = [0.01, 0.025, -0.01, 0.0]
    np.testing.assert_allclose(pooled.to_numpy(), expected)


def test_pooled_run_sums_trades_and_uses_pooled_returns(cfg, instruments):
    runs = [inst.runs["lstm"] for inst in instruments]
    pooled = comparison.pooled_run(cfg, runs)
    assert pooled.metrics["trades"] == sum(r.metrics["trades"] for r in runs)
    pnl = np.concatenate([r.trades_pnl for r in runs])
    assert pooled.metrics["win_rate"] == pytest.approx((pnl > 0).mean())
    # the instruments do not overlap in time, so the pooled returns are both series in turn
    both = pd.concat([r.returns for r in runs]).to_numpy()
    np.testing.assert_allclose(pooled.returns.to_numpy(), both)
    assert pooled.metrics["sharpe"] == pytest.approx(stats.sharpe_ratio(both, 252))


def test_pooled_forecast_metrics_are_scale_free(instruments):
    doubled = make_instrument("AAA", 1)
    for col in ("open", "high", "low", "close", "random_walk", "sma", "lstm"):
        doubled.frame[col] *= 1000.0
    one = comparison.pooled_forecast_metrics([instruments[0]], "lstm")
    scaled = comparison.pooled_forecast_metrics([doubled], "lstm")
    assert one["theil_u2"] == pytest.approx(instruments[0].forecast_metrics["lstm"]["theil_u2"])
    assert scaled["theil_u2"] == pytest.approx(one["theil_u2"])
    assert scaled["dm_statistic"] == pytest.approx(one["dm_statistic"])
    assert math.isnan(one["rmse"])


def test_excess_returns_use_each_backtests_risk_free_rate(cfg, instruments):
    from strategies.metrics import risk_free_per_bar

    inst = instruments[0]
    rate = pd.Series(0.0, index=inst.runs["lstm"].equity.index)
    rate.iloc[100:] = 0.05  # the rate moves mid-period: a constant would not see it
    for run in inst.runs.values():
        run.risk_free = rate
    league = comparison.compare(cfg, instruments, None).league
    row = league.set_index(["instrument", "strategy"]).loc[("AAA", "lstm")]
    r = inst.runs["lstm"].returns
    excess = (r - risk_free_per_bar(rate, r.index)).to_numpy()
    assert row["psr"] == pytest.approx(stats.probabilistic_sharpe_ratio(excess), rel=1e-12)
    assert row["psr"] != pytest.approx(stats.probabilistic_sharpe_ratio(r.to_numpy()), rel=1e-6)
    # BBB's runs kept the constant 0: the pooled rate is each date's own instrument's rate
    pooled = comparison.pooled_risk_free([inst.runs["lstm"], instruments[1].runs["lstm"]])
    assert pooled.index.is_monotonic_increasing and pooled.index.is_unique
    assert pooled.loc[rate.index].equals(rate)
    assert (pooled.loc[instruments[1].runs["lstm"].equity.index] == 0.0).all()


# The report only reads stage outputs --------------------------------------------------------

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
# the report package, the report stage and the names it shares with the backtest stage
REPORT_FILES = (
    *sorted((PIPELINES / "report").glob("*.py")),
    PIPELINES / "stages" / "report.py",
    PIPELINES / "common" / "strategy_names.py",
)
# Backtrader and the other stages: the report reads their files, it does not call them.
FORBIDDEN = (
    "backtrader", "strategies.engine", "strategies.plotting", "pipelines.stages.backtest",
    "pipelines.sources.load", "pipelines.stages.train",
)  # fmt: skip


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith((f + ".", f + "_")) for f in FORBIDDEN)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_report_modules_import_no_backtest_engine_and_no_other_stage():
    assert len(REPORT_FILES) > 10
    for path in REPORT_FILES:
        imported = _imports(path)
        bad = sorted(n for n in imported if _forbidden(n))
        assert not bad, f"{path.relative_to(PIPELINES.parent)} imports {bad}"


def test_loading_the_report_stage_does_not_load_backtrader():
    code = (
        "import sys, pipelines.stages.report\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'backtrader'"
        " or m == 'strategies.engine'))\n"
    )
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


# Verdicts ---------------------------------------------------------------------------------


def _block(**lstm):
    base = {
        "kind": "forecast", "sharpe": 0.5, "psr": 0.8, "dsr": 0.3, "sharpe_diff": 0.1,
        "sharpe_diff_low": -0.5, "sharpe_diff_high": 0.7, "rmse": 2.0, "theil_u2": 1.01,
        "dm_statistic": 0.5, "dm_p_value": 0.6, "seeds": np.nan, "sharpe_seed_mean": np.nan,
        "sharpe_seed_std": np.nan,
    }  # fmt: skip
    rows = {
        "lstm": {**base, **lstm},
        "sma": {**base, "sharpe": 0.8, "rmse": 1.9, "theil_u2": 0.99},
        "random_walk": {**base, "sharpe": np.nan, "rmse": 1.98, "theil_u2": 1.0},
        "buy_and_hold": {**base, "kind": "benchmark", "sharpe": 0.4, "rmse": np.nan},
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def test_the_verdict_judges_the_configured_candidate_by_its_label():
    # report.candidate names the forecaster judged: here sma, which ranks first by Sharpe
    sentences, outcome = verdict(_block(), 0.05, 20, "sma", "SMA", "buy_and_hold")
    text = " ".join(sentences)
    assert "By Sharpe ratio the SMA strategy ranks 1 of" in text
    assert "As a forecaster the SMA ranks 1 of" in text
    assert "LSTM" not in text
    missing, _ = verdict(_block().drop(index="sma"), 0.05, 20, "sma", "SMA", "buy_and_hold")
    assert missing == ["No SMA forecasts in this experiment: nothing to judge."]


def test_the_verdict_names_the_configured_benchmark():
    # report.benchmark names the strategy the Sharpe edge is measured against
    block = _block(sharpe=1.5, dsr=0.99, sharpe_diff=1.1, sharpe_diff_low=0.3, sharpe_diff_high=1.9)
    block = block.rename(index={"buy_and_hold": "ema_crossover"})
    sentences, _ = verdict(block, 0.05, 20, "lstm", "LSTM", "ema_crossover")
    text = " ".join(sentences)
    assert "Sharpe ratio minus ema-crossover's: +1.10" in text
    assert "significantly better than ema-crossover" in text
    assert "its Sharpe edge over ema-crossover is statistically significant" in sentences[-1]
    assert "buy-and-hold" not in text


def test_verdict_when_the_lstm_loses():
    sentences, outcome = verdict(_block(), 0.05, 20, "lstm", "LSTM", "buy_and_hold")
    text = " ".join(sentences)
    assert outcome == "loss"
    assert "ranks 2 of 3" in text and "does not beat the baselines; the best is sma (0.80)" in text
    assert "not significantly different from buy-and-hold" in text
    assert "Deflated Sharpe ratio 0.30 after 20 trials" in text and "not significant" in text
    assert "the most accurate is sma" in text
    assert sentences[-1].startswith("Bottom line: the LSTM did not beat the baselines")


def test_verdict_when_the_lstm_wins_significantly():
    block = _block(
        sharpe=1.5, dsr=0.99, sharpe_diff=1.1, sharpe_diff_low=0.3, sharpe_diff_high=1.9,
        rmse=1.5, theil_u2=0.75, dm_statistic=-3.2, dm_p_value=0.001,
    )  # fmt: skip
    sentences, outcome = verdict(block, 0.05, 20, "lstm", "LSTM", "buy_and_hold")
    text = " ".join(sentences)
    assert outcome == "win"
    assert "ranks 1 of 3 (1.50) and beats every baseline; the next best is sma (0.80)" in text
    assert "significantly better than buy-and-hold" in text
    assert "significant at 0.05 even allowing for selection" in text
    assert "(the most accurate)" in text and "p = 0.001: significantly more accurate" in text
    assert "statistically significant" in sentences[-1] and "beat every baseline" in sentences[-1]


def test_significantly_worse_at_trading_is_a_loss_never_mixed():
    # GSPC as seen: the most accurate forecaster (so it "beat" the others on accuracy),
    # an insignificant Theil U2 just below 1, and a Sharpe ratio significantly below
    # buy-and-hold's. Before, that read "mixed".
    block = _block(
        sharpe=0.6, rmse=1.5, theil_u2=0.99966, dm_statistic=-0.3, dm_p_value=0.61,
        sharpe_diff=-0.62, sharpe_diff_low=-1.13, sharpe_diff_high=-0.19,
    )  # fmt: skip
    sentences, outcome = verdict(block, 0.05, 20, "lstm", "LSTM", "buy_and_hold")
    assert outcome == "loss"
    assert "significantly worse than buy-and-hold" in " ".join(sentences)
    line = headline(block, 0.05, "lstm", "LSTM", "buy_and_hold")
    assert line == (
        "LSTM trading: worse than buy_and_hold (Sharpe -0.62 [-1.13, -0.19]); "
        "forecasting: no different from the random walk (Theil U2 1.000, DM p = 0.610)."
    )
    # significantly less accurate than the random walk is a loss too, whatever the Sharpe
    worse_forecasts = _block(sharpe=1.5, rmse=1.5, theil_u2=1.2, dm_p_value=0.0004)
    assert verdict(worse_forecasts, 0.05, 20, "lstm", "LSTM", "buy_and_hold")[1] == "loss"
    assert "forecasting: worse than the random walk" in headline(
        worse_forecasts, 0.05, "lstm", "LSTM", "buy_and_hold"
    )
    assert "DM p < 0.001" in headline(worse_forecasts, 0.05, "lstm", "LSTM", "buy_and_hold")


def test_the_universe_headline_counts_losses_and_names_the_significant_ones():
    rows = []
    for inst, diff, low, high, u2, p in [
        ("GSPC", -0.62, -1.13, -0.19, 0.99966, 0.61),
        ("ORCL", -0.10, -0.60, 0.40, 1.01, 0.30),
        ("YHOO", -0.20, -0.70, 0.30, 0.98, 0.01),
        ("GOOG", 0.30, -0.20, 0.80, 1.00, 0.90),
        ("pooled", -0.15, -0.40, 0.10, 1.0, 0.5),
    ]:
        rows.append({
            "instrument": inst, "strategy": "lstm", "sharpe_diff": diff, "sharpe_diff_low": low,
            "sharpe_diff_high": high, "theil_u2": u2, "dm_p_value": p,
        })  # fmt: skip
    line = universe_headline(pd.DataFrame(rows), 0.05, "lstm", "LSTM", "buy_and_hold")
    assert line == (
        "LSTM loses to buy_and_hold on 3 of 4 instruments, significantly on GSPC; "
        "its forecasts beat the random walk's on 2 of 4, significantly on YHOO."
    )


def test_verdict_follows_the_numbers_not_a_template():
    # same block, only the interval moves: the significance sentence must change with it
    worse = " ".join(
        verdict(
            _block(sharpe_diff_low=-0.9, sharpe_diff_high=-0.2),
            0.05,
            5,
            "lstm",
            "LSTM",
            "buy_and_hold",
        )[0]
    )
    assert "significantly worse than buy-and-hold" in worse
    seeds = " ".join(
        verdict(
            _block(seeds=3, sharpe_seed_mean=0.45, sharpe_seed_std=0.12),
            0.05,
            5,
            "lstm",
            "LSTM",
            "buy_and_hold",
        )[0]
    )
    assert "Across 3 seeds its Sharpe ratio is 0.45 ± 0.12" in seeds


# The stage: atomic output, MLflow, rendering ------------------------------------------------


def _synthetic_cfg(root: Path):
    return load_config(
        "configs/smoke.yaml",
        overrides={
            "name": "synthetic",
            "output_directory": str(root / "build"),
            "data": {"instruments": ["AAA", "BBB"]},
            "report": {
                "directory": str(root / "reports"),
                "cost_sweep_bp": SWEEP_BP,
                "bootstrap": {"samples": 200, "block": 5},
            },
        },
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One run of ``report.report`` on the synthetic instruments (stage files patched out)."""
    cfg = _synthetic_cfg(tmp_path_factory.mktemp("report"))
    instruments = [make_instrument("AAA", 1), make_instrument("BBB", 2, start="2021-01-01")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "load_instruments", lambda c: instruments)
        patch.setattr(report, "load_cost_sweep", lambda c, insts: make_sweep(insts))
        patch.setattr(report, "bars_per_year", lambda c: (252.0, "daily"))
        patch.setattr(
            report,
            "load_trade_logs",
            lambda c, names: {i.name: make_trades(i) for i in instruments},
        )
        result = report.report(cfg)
    return cfg, result


def test_report_writes_every_output_and_logs_runs(built):

    cfg, result = built
    out = cfg.report_directory
    assert result.index == out / "index.html"
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "league.csv", "league.json", "cost_sweep.csv", "seeds.csv"} <= names
    for inst in ("AAA", "BBB"):
        for chart in CHART_PNGS:
            assert f"{inst}_{chart}.png" in names
    assert {"pooled_equity.png", "pooled_drawdown.png", "pooled_cost_sweep.png"} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left

    league = pd.read_csv(out / "league.csv")
    # the strategies' own runs are the backtest stage's: the report run holds the league
    assert tracking_store.child_runs(result.run_id) == []
    parent = tracking_store.client().get_run(result.run_id)
    logged = parent.data.metrics
    for row in league.itertuples():  # the pooled rows too
        for key in ("sharpe", "psr", "dsr", "cagr", "trades"):
            value = getattr(row, key)
            if np.isfinite(value):
                name = f"{row.instrument}/{row.strategy}/{key}"
                assert logged[name] == pytest.approx(value, rel=1e-9), name
    assert parent.data.metrics["n_trials"] == 12
    artifacts = {a.path for a in tracking_store.client().list_artifacts(result.run_id, "report")}
    assert "report/index.html" in artifacts


def test_a_failed_render_leaves_the_previous_report(built, tmp_path, instruments, monkeypatch):
    cfg = _synthetic_cfg(tmp_path)
    shutil.copytree(built[0].report_directory, cfg.report_directory)
    index = cfg.report_directory / "index.html"
    before = index.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("chart exploded")

    monkeypatch.setattr(report, "load_instruments", lambda c: instruments)
    monkeypatch.setattr(report, "load_cost_sweep", lambda c, insts: make_sweep(insts))
    monkeypatch.setattr(report, "bars_per_year", lambda c: (252.0, "daily"))
    monkeypatch.setattr(report, "load_trade_logs", lambda c, names: {})
    monkeypatch.setattr(report, "render_html", broken)
    with pytest.raises(RuntimeError, match="chart exploded"):
        report.report(cfg)
    assert index.read_bytes() == before
    assert not [p for p in index.parent.parent.iterdir() if p.name.startswith(".")]


def test_html_is_self_contained(built):
    _, result = built
    html = result.index.read_text()
    # scripts are inline (Bokeh's once, then the charts and the page's own), nothing loaded
    assert "<link" not in html and "@import" not in html
    assert not re.search(r"<script[^>]*\bsrc\s*=", html)
    # the page's own markup and style load nothing (Bokeh's library code mentions a MathJax
    # CDN, used only for LaTeX labels, which the report has none of: the browser test
    # checks that no request leaves the page)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup)
    assert not re.search(r"""url\(\s*["']?(https?:)?//""", markup)
    assert "$$" not in markup  # no TeX label that would fetch MathJax
    assert "<img" not in html  # charts are Bokeh, their PNG twins files beside the page
    pngs = sorted(p.name for p in result.index.parent.glob("*.png"))
    linked = sorted(set(re.findall(r'<a href="([^"/]+\.png)">', html)))
    assert linked == pngs and len(pngs) == 2 * len(CHART_PNGS) + 3
    # every chart of the page links its PNG (the gate heatmaps share one drawing them all)
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", html, re.S)
    assert len(captions) > len(pngs)
    assert all(re.search(r'<a href="[^"/]+\.png">PNG</a>$', c.strip()) for c in captions)
    for name in pngs:
        assert (result.index.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every league row of the CSV is in the HTML table, with its exact value
    league = pd.read_csv(result.index.parent / "league.csv")
    main = league[league["kind"] != "seed"]
    rows = re.findall(r'<tr class="[^"]*" data-instrument="([^"]+)" data-strategy="([^"]+)"', html)
    assert sorted(rows) == sorted(zip(main["instrument"], main["strategy"], strict=True))
    lstm = main[(main["instrument"] == "AAA") & (main["strategy"] == "lstm")].iloc[0]
    cell = re.search(
        r'data-instrument="AAA" data-strategy="lstm">.*?data-metric="sharpe" data-value="([^"]+)"',
        html,
        re.S,
    )
    assert cell and float(cell.group(1)) == lstm["sharpe"]


def test_page_has_contents_legend_and_readable_numbers(built):
    _, result = built
    html = result.index.read_text()
    toc = re.search(r'<nav class="toc".*?</nav>', html, re.S).group(0)
    anchors = re.findall(r'href="#([^"]+)"', toc)
    for anchor in anchors:
        assert f'id="{anchor}"' in html, anchor
    assert {"verdicts", "league", "seeds", "pooled", "inst-AAA", "inst-AAA-gates"} <= set(anchors)
    # every verdict class the page uses is styled and explained in the legend
    used = set(re.findall(r'<div class="verdict (\w+)">', html))
    assert used
    for css in used | {"win", "loss", "mixed"}:
        assert f".verdict.{css} {{" in html and f"<b>{css}</b>" in html
    # seeds table: integer counts as integers, headers in words
    seeds = re.search(r'<table id="seed-table".*?</table>', html, re.S).group(0)
    assert "_" not in re.search(r"<thead>.*?</thead>", seeds, re.S).group(0)
    cells = re.findall(r"<td>([^<]*)</td>", seeds)
    assert any(re.fullmatch(r"\d+ ± \d+", c) for c in cells)  # trades
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S))
    assert not re.search(r"-0\.0+(?![\d])", text), "a value that rounds to 0 shown as -0.0"
    # one strategy picker per instrument, one tear sheet per strategy, the LSTM's shown first
    assert len(re.findall(r'<select class="strategy-picker"', html)) == 2
    sections = re.findall(
        r'<section class="strategy" id="strategy-(\w+?)-(\w+)"[^>]*?( hidden)?>', html
    )
    assert {(i, s) for i, s, _ in sections} == {
        (i, s) for i in ("AAA", "BBB") for s in ("lstm", "sma", "sma_crossover", "buy_and_hold")
    }
    assert {(i, s) for i, s, hidden in sections if not hidden} == {("AAA", "lstm"), ("BBB", "lstm")}


def test_tear_sheet_tables_follow_quantstats_and_the_trade_log(built):
    import quantstats as qs

    _, result = built
    html = result.index.read_text()
    section = re.search(
        r'<section class="strategy" id="strategy-AAA-lstm".*?</section>', html, re.S
    )
    assert section
    section = section.group(0)
    inst = make_instrument("AAA", 1)  # the fixture's instrument, rebuilt from its seed
    run = inst.runs["lstm"]
    monthly = qs.stats.monthly_returns(run.returns, eoy=True, compounded=True)
    first = re.search(
        r'<table class="monthly">.*?<tbody><tr><td class="name">(\d+)</td>(.*?)</tr>', section, re.S
    )
    year, cells = first.group(1), first.group(2)
    values = [float(v) for v in re.findall(r'data-value="([^"]+)"', cells)]
    monthly.index = monthly.index.astype(str)
    expected = monthly.loc[year].to_numpy(float)
    # months before the strategy's first return are blank, not quantstats' 0.0%
    first_month = run.returns.index[0].month if str(run.returns.index[0].year) == year else 1
    expected[: first_month - 1] = np.nan
    np.testing.assert_allclose(values[:13], expected, rtol=1e-12)
    # beside the year: the benchmark's return that year (end-of-year against buy-and-hold)
    bench = qs.stats.monthly_returns(inst.runs["buy_and_hold"].returns, eoy=True, compounded=True)
    bench.index = bench.index.astype(str)
    assert values[13] == pytest.approx(bench.loc[year, "EOY"], rel=1e-12)
    trades = make_trades(inst)["lstm"]
    listed = re.search(r'<table class="trades.*?</table>', section, re.S).group(0)
    rows = re.findall(r'<tr><td class="name">(\d{4}-\d\d-\d\d)</td><td>([^<]+)</td>', listed)
    assert [r[0] for r in rows] == [str(d.date()) for d in trades["entry_date"]]
    assert rows[-1][1] == "open"
    depth = re.findall(r'<table class="drawdowns">.*?</table>', section, re.S)[0]
    worst = qs.stats.drawdown_details(qs.stats.to_drawdown_series(run.returns))["max drawdown"]
    assert f"{worst.min():.1f}%" in depth


def test_verdict_mixed_case_names_which_edge_is_not_significant():
    block = _block(rmse=1.5, theil_u2=0.98, dm_statistic=-0.4, dm_p_value=0.64)
    sentences, outcome = verdict(block, 0.05, 20, "lstm", "LSTM", "buy_and_hold")
    assert outcome == "mixed"
    assert sentences[-1] == (
        "Bottom line: the LSTM forecast most accurately but did not beat every baseline by "
        "Sharpe ratio; its accuracy edge over the random walk is not statistically significant "
        "(Diebold-Mariano)."
    )


def test_verdict_reads_well_at_the_edges():
    # a ratio that rounds to 1.000 is not called lower; a mean that rounds to 0 has no sign
    block = _block(theil_u2=0.99996, seeds=2, sharpe_seed_mean=-0.001, sharpe_seed_std=0.26)
    text = " ".join(verdict(block, 0.05, 20, "lstm", "LSTM", "buy_and_hold")[0])
    assert "Theil U2 0.99996, the same error to three decimals" in text
    assert "(lower error)" not in text and "-0.00" not in text
    assert "Across 2 seeds its Sharpe ratio is 0.00 ± 0.26" in text
    assert ": but" not in text
    assert "p = 0.600: more accurate, but not significantly." in text
    worse = " ".join(verdict(_block(), 0.05, 20, "lstm", "LSTM", "buy_and_hold")[0])
    assert (
        "Theil U2 1.010, higher error; Diebold-Mariano 0.50, p = 0.600: less accurate, but "
        "not significantly." in worse
    )


def test_gates_long_layout_matches_the_per_unit_frames():
    from pipelines.execution.units import GATES_COLUMNS, gates_long
    from pipelines.report.gate_charts import gate_matrix

    dates = pd.bdate_range("2021-01-01", periods=5, name="date")
    rng = np.random.default_rng(3)
    per_unit = {
        g: pd.DataFrame(
            rng.uniform(size=(5, 3)), index=dates, columns=["unit_0", "unit_1", "unit_2"]
        )
        for g in ("forget", "input", "output", "cell")
    }
    frame = gates_long(per_unit, fold=2)
    assert tuple(frame.columns) == GATES_COLUMNS and len(frame) == 15
    assert (frame["fold"] == 2).all()
    row = frame[(frame["date"] == dates[3]) & (frame["unit"] == 1)].iloc[0]
    assert row["input"] == per_unit["input"].iloc[3, 1]
    for gate, wide in per_unit.items():
        np.testing.assert_array_equal(gate_matrix(frame, gate).to_numpy(), wide.to_numpy())


def test_gate_statistics_use_no_later_bars():
    from pipelines.report import page_charts as report_charts

    inst = make_instrument("AAA", 1)
    t = inst.gates["date"].unique()[150]
    means = report_charts._gate_means(inst.gates, inst.frame["close"], 252.0)
    changed = inst.frame["close"].copy()
    changed[changed.index > t] *= np.linspace(0.5, 2.0, int((changed.index > t).sum()))
    gates = inst.gates.copy()
    gates.loc[gates["date"] > t, ["forget", "input", "output", "cell"]] = 0.0
    again = report_charts._gate_means(gates, changed, 252.0)
    pd.testing.assert_frame_equal(means.loc[:t], again.loc[:t])
    assert not means.loc[t:].iloc[1:].equals(again.loc[t:].iloc[1:])
    rows = {r["gate"]: r for r in report_charts.gate_correlations(means)}
    pair = means[["forget", "vol"]].dropna()
    assert rows["forget"]["vol"] == f"{pair['forget'].corr(pair['vol'], method='spearman'):+.2f}"


@pytest.mark.slow
def test_a_default_sized_report_stays_under_10_mb(tmp_path):
    """The default run's shape: 4 instruments x 9 strategies (and 2 seeds), 4 folds of 250
    bars, 32 LSTM units. The page carries Bokeh's JavaScript once and every chart's data."""
    from pipelines.report.html import render_html

    cfg = _synthetic_cfg(tmp_path)
    extra = ("ema", "kalman", "ols", "random_walk", "ema_crossover")
    instruments = [
        make_instrument(name, k, days=1000, start=f"{2008 + k}-01-01", extra=extra, units=32)
        for k, name in enumerate(("AAA", "BBB", "CCC", "DDD"))
    ]
    comp = comparison.compare(cfg, instruments, make_sweep(instruments))
    trades = {inst.name: make_trades(inst) for inst in instruments}
    index = render_html(cfg, comp, instruments, tmp_path, trades=trades)
    size = index.stat().st_size
    assert 2e6 < size < 10e6, f"{size / 1e6:.1f} MB"  # the real default run: 5.2 MB
    assert len(list(tmp_path.glob("*.png"))) == 4 * len(CHART_PNGS) + 3


def test_seed_spreads_read_as_people_write_them():
    from pipelines.report.html import _mean_std

    assert _mean_std(103.0, 1.41, "count") == "103 ± 1"
    assert _mean_std(111.0, math.nan, "count") == "111"  # one seed: no spread to show
    assert _mean_std(0.1234, 0.015, "percent") == "12.3% ± 1.5%"
    assert _mean_std(math.nan, 0.1, "ratio") == "–"


def test_trade_points_and_common_histogram_bins():
    from pipelines.report.charts import return_histograms, trade_points

    log = pd.DataFrame(
        {
            "entry_date": pd.to_datetime(["2020-01-02", "2020-02-03"]),
            "exit_date": pd.to_datetime(["2020-01-10", None]),
            "size": [10, -5],
            "entry_price": [100.0, 110.0],
            "exit_price": [105.0, np.nan],
            "pnl_net": [49.5, np.nan],
        }
    )
    points = trade_points(log)
    assert list(points["what"]) == ["entry long", "entry short", "exit"]  # the open one: no exit
    assert list(points["date"]) == list(pd.to_datetime(["2020-01-02", "2020-02-03", "2020-01-10"]))
    assert list(points["price"]) == [100.0, 110.0, 105.0]
    assert np.isnan(points["pnl"][:2]).all() and points["pnl"][2] == 49.5

    rng = np.random.default_rng(0)
    returns = {
        "a": pd.Series(rng.normal(0, 0.01, 1000)),
        "b": pd.Series(np.r_[rng.normal(0, 0.02, 999), 0.5]),  # one outlier
    }
    edges, shares = return_histograms(returns, bins=20)
    assert len(edges) == 21 and set(shares) == {"a", "b"}
    pooled = 100 * np.r_[returns["a"], returns["b"]]
    assert edges[0] == np.quantile(pooled, 0.001) and edges[-1] == np.quantile(pooled, 0.999)
    for share in shares.values():
        assert share.sum() == pytest.approx(100.0)  # values beyond the edges fall in the end bins
    assert shares["b"][-1] >= 0.1


# The strategy tear sheet --------------------------------------------------------------------


def test_months_outside_the_window_are_blank_and_an_open_drawdown_is_not_recovered():
    from pipelines.report.inputs import StrategyRun
    from pipelines.report.tearsheet import drawdown_rows, monthly_rows, strategy_stats

    dates = pd.bdate_range("2009-03-05", "2013-03-20")
    returns = pd.Series(0.001, index=dates)
    returns.iloc[-30:] = -0.004  # ends 11% under water: a drawdown still open on the last bar
    equity = 100_000 * (1 + returns).cumprod()
    stats = strategy_stats(StrategyRun({}, equity, returns), 252)
    rows = {
        row["year"]: [cell["text"] for cell in row["cells"]] for row in monthly_rows(stats.monthly)
    }
    assert rows["2009"][:2] == ["–", "–"] and rows["2009"][2] != "–"  # Jan, Feb: before it
    assert rows["2013"][2] != "–" and rows["2013"][3:12] == ["–"] * 9  # Apr..Dec: after it
    assert all(text != "–" for text in rows["2011"])
    deepest = drawdown_rows(stats.drawdowns)[0]
    assert deepest[2] == "not recovered"


def test_gate_heatmap_hover_names_trading_dates_and_units():
    from pipelines.report.bokeh_gates import gate_heatmap

    dates = pd.bdate_range("2020-01-01", periods=30)  # no weekend among them
    matrix = pd.DataFrame(
        np.random.default_rng(0).random((30, 4)), index=dates, columns=[3, 0, 2, 1]
    )
    fig = gate_heatmap(matrix, "forget", "t")
    (hover,) = [t for t in fig.tools if type(t).__name__ == "HoverTool"]
    assert [name for name, _ in hover.tooltips] == ["date", "unit", "forget"]
    assert hover.formatters["$x"].args["dates"] == [d.strftime("%Y-%m-%d") for d in dates]
    assert hover.formatters["$y"].args["units"] == ["3", "0", "2", "1"]  # rows in drawn order


def test_charts_emphasise_the_configured_candidate_and_benchmark_not_a_name():
    from pipelines.report import bokeh as report_bokeh
    from pipelines.report.charts import Emphasis, equity_chart

    dates = pd.bdate_range("2020-01-01", periods=50)
    equity = {n: pd.Series(np.linspace(1, 2, 50), index=dates) for n in ("lstm", "sma", "hold")}
    emphasis = Emphasis(candidate="sma", benchmark="hold")
    widths = {
        line.get_label(): line.get_linewidth()
        for line in equity_chart(equity, "t", emphasis).axes[0].lines
    }
    assert widths["sma"] > widths["hold"] > widths["lstm"]
    fig = report_bokeh.equity_chart(equity, "t", emphasis)
    bokeh_widths = {r.name: r.glyph.line_width for r in fig.renderers if r.name in equity}
    assert bokeh_widths["sma"] > bokeh_widths["hold"] > bokeh_widths["lstm"]


def test_pooled_figures_say_when_the_windows_differ():
    from types import SimpleNamespace

    from pipelines.report.html import pooled_windows_note

    def inst(name, start, end):
        return SimpleNamespace(name=name, oos_start=pd.Timestamp(start), oos_end=pd.Timestamp(end))

    same = [inst("A", "2015-01-02", "2018-12-31"), inst("B", "2015-01-02", "2018-12-31")]
    assert pooled_windows_note(same) == ""
    apart = [inst("GOOG", "2009-03-02", "2013-03-28"), inst("GSPC", "2015-01-12", "2018-12-31")]
    note = pooled_windows_note(apart)
    assert "do not overlap in time (GOOG 2009-03-02 to 2013-03-28, GSPC 2015-01-12" in note
    partly = [inst("A", "2015-01-02", "2018-12-31"), inst("B", "2016-01-04", "2019-12-31")]
    assert "only partly overlap" in pooled_windows_note(partly)


def test_the_trade_view_draws_each_trade_from_entry_to_exit_coloured_by_its_pnl():
    from pipelines.report.trade_view import DOWN, UP, trade_segments, trade_view

    log = pd.DataFrame(
        {
            "entry_date": pd.to_datetime(["2020-01-02", "2020-01-09", "2020-01-20"]),
            "exit_date": pd.to_datetime(["2020-01-07", "2020-01-15", None]),
            "size": [10, -5, 3],
            "entry_price": [100.0, 110.0, 104.0],
            "exit_price": [105.0, 112.0, np.nan],
            "pnl_net": [49.5, -10.6, np.nan],
        }
    )
    last = pd.Timestamp("2020-01-31")
    segments = trade_segments(log, last, 107.0)
    assert list(segments["x0"]) == list(log["entry_date"])
    assert list(segments["x1"]) == [pd.Timestamp("2020-01-07"), pd.Timestamp("2020-01-15"), last]
    assert list(segments["y1"]) == [105.0, 112.0, 107.0]  # the open one: to the last close
    assert list(segments["colour"]) == [UP, DOWN, DOWN]  # a profit green, else red
    assert list(segments["side"]) == ["long", "short", "long"]
    assert list(segments["pnl_text"]) == ["+50", "-11", "not marked (open, at the last close)"]

    dates = pd.bdate_range("2020-01-01", "2020-01-31")
    bars = pd.DataFrame(
        {"open": 100.0, "high": 102.0, "low": 99.0, "close": 101.0, "volume": 1e6}, index=dates
    )
    equity = {"lstm": pd.Series(np.linspace(1e5, 1.1e5, len(dates)), index=dates)}
    layout, x_range = trade_view(
        "AAA", bars, {"lstm": log}, equity, {"lstm": {"forecast": bars["close"]}}, ["lstm"], "t"
    )
    panels = layout.children
    assert all(p.x_range is x_range for p in panels)  # price, volume, P&L, equity, drawdown
    named = {r.name: r for p in panels for r in p.renderers if r.name}
    drawn = named["pick:AAA:lstm:trades"].data_source.data
    assert list(drawn["colour"]) == [UP, DOWN, DOWN]
    assert {"pick:AAA:lstm:signal0", "pick:AAA:lstm:pnl", "pick:AAA:lstm:equity"} <= set(named)


def test_a_strategys_key_figures_come_from_the_backtest_quantstats_and_its_trades():
    import quantstats as qs

    from pipelines.report.inputs import StrategyRun
    from pipelines.report.tearsheet import metric_rows

    dates = pd.bdate_range("2020-01-01", periods=300)
    returns = pd.Series(np.random.default_rng(3).normal(0.0005, 0.01, 300), index=dates)
    equity = 1e5 * (1 + returns).cumprod()
    metrics = {"trades": 3, "exposure": 0.42, "win_rate": 0.5, "profit_factor": 1.6, "calmar": 0.8}
    log = pd.DataFrame(
        {
            "exit_date": pd.to_datetime(["2020-02-03", "2020-05-01", None]),
            "pnl_net": [120.0, -40.0, np.nan],
            "bars": [10, 30, 5],
        }
    )
    rows = {
        name: value for name, value, _ in metric_rows(StrategyRun(metrics, equity, returns), log)
    }
    assert rows["trades"] == "3 trades" and rows["exposure"] == "42.0%"
    assert rows["profit factor"] == "1.60" and rows["Calmar"] == "0.80"
    assert rows["expectancy"] == "+40"  # the closed trades' mean net P&L
    assert rows["average holding"] == "15.0" and rows["longest holding"] == "30.0"
    assert rows["VaR 95%"] == f"{100 * qs.stats.value_at_risk(returns):.2f}%"
    assert rows["CVaR 95%"] == f"{100 * qs.stats.cvar(returns):.2f}%"
    assert rows["skew"] == f"{qs.stats.skew(returns):.2f}"
    assert rows["kurtosis"] == f"{qs.stats.kurtosis(returns):.2f}"
    one = metric_rows(StrategyRun({"trades": 1}, equity, returns), log.iloc[:1])
    assert one[0][1] == "1 trade"
