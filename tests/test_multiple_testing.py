"""SPA / reality check / StepM and the Holm / BH corrections: plumbing, then calibration.

The calibration tests draw synthetic daily returns many times and count how
often each procedure rejects. Tolerance: with ``N`` repetitions the observed
rejection rate of a procedure whose true rate is ``alpha`` has binomial
standard error ``sqrt(alpha (1 - alpha) / N)`` (0.0154 at alpha = 0.05 and
N = 200), so "at most about the nominal rate" is checked as
``rate <= alpha + 3 SE`` (0.096): a correct procedure fails that about once
in 700 runs, one that rejects twice as often as it should fails almost
always. The draws are seeded, so the test is reproducible.
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from models.metrics import diebold_mariano
from pipelines.report.multiple_testing import (
    AcrossInstruments,
    across_instruments,
    adjust_pvalues,
    superiority_frame,
    superiority_table,
    superiority_test,
    win_count,
)
from pipelines.report.stats import sharpe_difference_ci

ALPHA = 0.05
N_REPS = 200
SE = math.sqrt(ALPHA * (1 - ALPHA) / N_REPS)
TOLERANCE = ALPHA + 3 * SE
T = 250  # one year of daily returns
N_STRATEGIES = 5
NOISE = 0.005  # daily spread of a strategy around the benchmark
EDGE = 0.0015  # planted mean daily edge: about 4.7 standard errors of a 250-day mean difference


def draw(rng: np.random.Generator, edge: float = 0.0) -> pd.DataFrame:
    """Benchmark plus ``N_STRATEGIES`` strategies that are noise around it; s2 gets ``edge``."""
    bench = rng.normal(0.0003, 0.01, T)
    strategies = bench[:, None] + rng.normal(0.0, NOISE, (T, N_STRATEGIES))
    strategies[:, 2] += edge
    frame = pd.DataFrame(strategies, columns=[f"s{i}" for i in range(N_STRATEGIES)])
    frame["buy_and_hold"] = bench
    frame.index = pd.bdate_range("2020-01-01", periods=T)
    return frame


def run_test(frame: pd.DataFrame, seed: int):
    return superiority_test(frame, "buy_and_hold", size=ALPHA, block=5, reps=200, seed=seed)


# Plumbing ---------------------------------------------------------------------------------


def test_superiority_finds_a_clear_winner_and_is_reproducible():
    frame = draw(np.random.default_rng(1), edge=0.003)
    a, b = run_test(frame, seed=3), run_test(frame, seed=3)
    assert a == b  # seeded: same p-values and the same names
    assert a.superior == ("s2",)
    assert a.spa_consistent < ALPHA and a.reality_check < ALPHA
    assert a.spa_lower <= a.spa_consistent <= a.spa_upper
    assert a.strategies == tuple(f"s{i}" for i in range(N_STRATEGIES)) and a.n_obs == T


def test_losses_are_negated_returns_a_worse_strategy_is_not_superior():
    frame = draw(np.random.default_rng(2), edge=-0.003)  # s2 loses 30 bp a day
    result = run_test(frame, seed=0)
    assert "s2" not in result.superior
    assert result.spa_consistent > ALPHA


def test_superiority_aligns_on_common_dates_and_excludes_copies_of_the_benchmark():
    frame = draw(np.random.default_rng(3))
    frame.iloc[:10, 0] = np.nan  # s0 starts later: the family is tested on the common dates
    frame["copy"] = frame["buy_and_hold"]
    result = run_test(frame, seed=0)
    assert result.n_obs == T - 10
    assert result.excluded == ("copy",) and "copy" not in result.strategies


def test_superiority_too_few_dates_is_untested_not_an_error():
    frame = draw(np.random.default_rng(4)).iloc[:5]
    result = run_test(frame, seed=0)
    assert not result.tested and result.superior == ()


def test_superiority_without_benchmark_names_it():
    with pytest.raises(ValueError, match="GSPC: no benchmark column 'buy_and_hold'"):
        superiority_test(pd.DataFrame({"a": [0.1]}), "buy_and_hold", scope="GSPC")


def test_superiority_table_per_scope_leaves_the_seeds_out():
    frame = draw(np.random.default_rng(5), edge=0.003)
    excess = {
        "GSPC": {**{c: frame[c] for c in frame}, "lstm_seed0": frame["s2"]},
        "GOOG": {"s0": frame["s0"]},  # no benchmark: skipped
    }
    tests = superiority_table(excess, "buy_and_hold", size=ALPHA, block=5, reps=200, seed=0)
    assert [t.scope for t in tests] == ["GSPC"]
    assert "lstm_seed0" not in tests[0].strategies
    table = superiority_frame(tests)
    assert table.loc[0, "stepm_superior"] == "s2" and table.loc[0, "strategies"] == N_STRATEGIES


def test_adjust_pvalues_equal_the_textbook_formulas():
    p = pd.Series([0.01, 0.04, 0.03, 0.5, np.nan], index=list("abcde"))
    out = adjust_pvalues(p, 0.05)
    # Holm: sorted p (a 0.01, c 0.03, b 0.04, d 0.5) times (4, 3, 2, 1) = (0.04, 0.09, 0.08,
    # 0.5), running max in that order: b = max(0.09, 0.08) = 0.09; shown in input order a b c d
    assert out["p_holm"].tolist()[:4] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    # BH: p * m / rank, running min from the top: 0.5, min(0.04*4/3, 0.5) = 0.0533, ...
    assert out["p_bh"].tolist()[:4] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert np.isnan(out.loc["e", "p_holm"]) and not out.loc["e", "reject_raw"]
    assert out["reject_raw"].tolist() == [True, True, True, False, False]
    assert out["reject_holm"].tolist() == [True, False, False, False, False]


def test_win_count_is_a_one_sided_sign_test():
    result = win_count([True] * 8 + [False] * 2)
    assert (result.wins, result.n) == (8, 10)
    assert result.pvalue == pytest.approx(sum(math.comb(10, k) for k in (8, 9, 10)) / 2**10)
    assert math.isnan(win_count([]).pvalue)


def _league(sharpe_diff, sharpe_p, dm_stat, dm_p) -> pd.DataFrame:
    n = len(sharpe_diff)
    rows = pd.DataFrame(
        {
            "instrument": [f"I{i}" for i in range(n)],
            "strategy": "lstm",
            "sharpe_diff": sharpe_diff,
            "sharpe_diff_p_value": sharpe_p,
            "dm_statistic": dm_stat,
            "dm_p_value": dm_p,
        }
    )
    pooled = rows.iloc[:1].assign(instrument="pooled", sharpe_diff_p_value=0.0)
    other = rows.assign(strategy="sma")
    return pd.concat([rows, pooled, other], ignore_index=True)


def test_across_instruments_counts_only_wins_in_the_lstms_favour():
    league = _league(
        sharpe_diff=[0.5, -0.6, 0.2, 0.1],
        sharpe_p=[0.001, 0.001, 0.04, 0.6],
        dm_stat=[-3.0, 2.0, -0.5, np.nan],
        dm_p=[0.002, 0.01, 0.6, np.nan],
    )
    result = across_instruments(league, "lstm", ALPHA)
    assert isinstance(result, AcrossInstruments)
    assert list(result.table.index) == ["I0", "I1", "I2", "I3"]  # pooled and sma ignored
    assert result.tests == {"sharpe": 4, "dm": 3}
    # I1 is significant but against the LSTM: never a win
    assert result.table["sharpe_win_raw"].tolist() == [True, False, True, False]
    assert result.significant("sharpe", "holm") == 1  # I2's 0.04 * 3 = 0.12 after Holm
    assert (result.sharpe_wins.wins, result.sharpe_wins.n) == (3, 4)
    assert (result.forecast_wins.wins, result.forecast_wins.n) == (2, 3)
    assert across_instruments(league[league["strategy"] == "sma"], "lstm") is None


# Calibration ------------------------------------------------------------------------------


def _uncorrected_any(frame: pd.DataFrame) -> bool:
    """Each strategy tested alone (one-sided paired t-test): does any 'beat' the benchmark?"""
    diffs = frame.drop(columns="buy_and_hold").sub(frame["buy_and_hold"], axis=0)
    p = sps.ttest_1samp(diffs, 0.0, alternative="greater").pvalue
    return bool((p < ALPHA).any())


@pytest.mark.slow
def test_calibration_spa_stepm_reality_check():
    rng = np.random.default_rng(2024)
    null = {"spa": 0, "rc": 0, "stepm": 0, "uncorrected": 0}
    edge = {"spa": 0, "stepm_finds_s2": 0, "stepm_false": 0}
    for rep in range(N_REPS):
        frame = draw(rng)
        result = run_test(frame, seed=rep)
        null["spa"] += result.spa_consistent < ALPHA
        null["rc"] += result.reality_check < ALPHA
        null["stepm"] += bool(result.superior)
        null["uncorrected"] += _uncorrected_any(frame)
        planted = run_test(draw(rng, EDGE), seed=rep)
        edge["spa"] += planted.spa_consistent < ALPHA
        edge["stepm_finds_s2"] += "s2" in planted.superior
        edge["stepm_false"] += bool(set(planted.superior) - {"s2"})
    rates = {k: v / N_REPS for k, v in null.items()}
    # corrected: at most about the nominal family-wise rate
    for name in ("spa", "rc", "stepm"):
        assert rates[name] <= TOLERANCE, (name, rates)
    # uncorrected: 5 independent tests at 5 % reject somewhere 1 - 0.95**5 = 23 % of the time
    assert rates["uncorrected"] >= 0.15, rates
    assert edge["spa"] / N_REPS >= 0.8, edge
    assert edge["stepm_finds_s2"] / N_REPS >= 0.8, edge
    assert edge["stepm_false"] / N_REPS <= TOLERANCE, edge


def _instrument_pvalues(rng: np.random.Generator, m: int, edge_on: int | None) -> pd.DataFrame:
    """One synthetic universe of ``m`` instruments: the LSTM's league rows (DM and Sharpe tests).

    Under the null the LSTM's returns are noise around buy-and-hold and its
    forecast errors are as large as the random walk's; instrument ``edge_on``
    gets a planted edge in both.
    """
    rows = []
    for i in range(m):
        bump = EDGE if i == edge_on else 0.0
        bench = rng.normal(0.0003, 0.01, T)
        lstm = bench + rng.normal(bump, NOISE, T)
        e_rw = rng.normal(0.0, 1.0, T)
        e_lstm = rng.normal(0.0, 0.75 if i == edge_on else 1.0, T)
        ci = sharpe_difference_ci(lstm, bench, samples=200, block=5, seed=i)
        dm, dm_p = diebold_mariano(e_lstm, e_rw)
        rows.append((ci.estimate, ci.pvalue, dm, dm_p))
    frame = pd.DataFrame(rows, columns=["sd", "sp", "dm", "dp"])
    return _league(frame["sd"], frame["sp"], frame["dm"], frame["dp"])


@pytest.fixture
def frozen_heap():
    """statsmodels' Holm runs ``gc.collect()`` on every call: 0.2 s over a test session's heap.

    Freezing the objects alive now keeps them out of those collections (400 calls here).
    """
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.slow
def test_calibration_holm_and_bh_across_instruments(frozen_heap):
    m = 10
    rng = np.random.default_rng(17)
    null = dict.fromkeys(["raw", "holm", "bh"], 0)
    found = dict.fromkeys(["holm", "bh"], 0)
    for _ in range(N_REPS):
        result = across_instruments(_instrument_pvalues(rng, m, None), "lstm", ALPHA)
        for method in null:
            # any instrument declared a significant LSTM win (either family), none is real
            null[method] += bool(
                result.significant("dm", method) or result.significant("sharpe", method)
            )
        planted = across_instruments(_instrument_pvalues(rng, m, 3), "lstm", ALPHA)
        for method in found:
            found[method] += bool(planted.table.loc["I3", f"dm_win_{method}"])
    rates = {k: v / N_REPS for k, v in null.items()}
    # Under the full null, BH's false discovery rate equals its family-wise rate. Two families
    # of one-sided wins (half of each two-sided alpha) together: at most about alpha.
    assert rates["holm"] <= TOLERANCE and rates["bh"] <= TOLERANCE, rates
    # uncorrected: 20 tests with a 2.5 % one-sided false-win rate: 1 - 0.975**20 = 40 %
    assert rates["raw"] >= 0.25, rates
    assert found["holm"] / N_REPS >= 0.8 and found["bh"] / N_REPS >= 0.8, found


# The report stage's section, on real stage files -------------------------------------------


@pytest.mark.slow
def test_report_shows_corrected_answers_ic_and_the_portfolio(tmp_path):
    from pipelines.config import load_config
    from pipelines.execution.portfolio_unit import run_portfolios
    from pipelines.report.inputs import load_instruments
    from pipelines.report.multiple import analyse
    from pipelines.stages import report
    from pipelines.stages.backtest import run_backtests, write_backtests
    from tests.test_backtest_stage import write_forecasts

    names = ["GSPC", "GOOG", "ORCL"]
    write_forecasts(tmp_path / "build" / "smoke", instruments=names)
    cfg = load_config(
        "configs/smoke.yaml",
        {
            "output_directory": str(tmp_path / "build"),
            "data": {"instruments": names},
            "backtest": {"top_k": {"k": 1}},
            "report": {"directory": str(tmp_path / "reports"), "cost_sweep_bp": [0, 10]},
        },
    )
    results = run_backtests(cfg, progress=False)
    write_backtests(cfg, results, run_portfolios(cfg, results))
    result = report.report(cfg)

    multiple = result.multiple
    assert [t.scope for t in multiple.superiority] == [*names, "pooled"]
    assert all(t.tested and t.reps == 200 and t.block == 10 for t in multiple.superiority)
    # the synthetic forecast files come without the train stage's metrics: no DM p-values
    assert multiple.across.tests == {"sharpe": 3, "dm": 0}
    assert list(multiple.cross_section.index) == ["sma", "ema", "kalman", "ols", "lstm"]
    assert "equal_weight" in multiple.portfolio.index and multiple.portfolio_test.tested
    page = result.index.read_text()
    assert 'id="multiple-testing"' in page and "after Holm" in page and "rank IC mean" in page
    sentences = " ".join(result.verdicts["pooled"])
    assert "Hansen's SPA" in sentences and "Over 3 instrument(s)" in sentences
    out = cfg.report_directory
    for name in ("multiple_testing", "across_instruments", "cross_section", "portfolio"):
        assert (out / f"{name}.csv").is_file()
    # the same seed gives the same p-values (the tests again, on the stage's files)
    again = analyse(cfg, load_instruments(cfg), result.comparison)
    assert again.superiority == multiple.superiority


def test_the_sections_tables_show_counts_as_integers_and_headers_in_words():
    from pipelines.report.multiple import _table

    frame = pd.DataFrame(
        {"strategies": [8.0], "days": [999.0], "sharpe_p_holm": [1.0], "ic_mean": [0.0123]},
        index=pd.Index(["GSPC"], name="scope"),
    )
    page = _table(frame, "caption")
    assert "<td>8</td>" in page and "<td>999</td>" in page  # counts, not 8.000
    assert "<td>1.000</td>" in page  # a p-value keeps its digits
    assert "<th>p (Holm)</th>" in page and "<th>IC mean</th>" in page
    assert "_" not in page.split("<tbody>")[0]  # no snake_case header
