"""pipelines.report.stats against published numbers, hand computations and known behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from pipelines.report import stats


def test_dsr_reproduces_the_papers_worked_example():
    # Bailey & López de Prado (2014), section on a numerical example: N = 100 trials,
    # annualised variance of the trials' Sharpe ratios 1/2, best annualised SR 2.5,
    # T = 1250 daily returns, skewness -3, kurtosis 10 -> E[max SR] = 0.1132 per
    # day (1.7894 annualised) and DSR = 0.9004.
    sr0 = stats.expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert sr0 * math.sqrt(250) == pytest.approx(1.7894, abs=5e-5)
    dsr = stats.psr_from_moments(2.5 / math.sqrt(250), 1250, -3.0, 10.0, benchmark=sr0)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_psr_by_hand():
    # SR = 0.1 per period, n = 101, normal moments: z = 0.1 * 10 / sqrt(1 + 0.0025 * 2 / 2)
    z = 0.1 * 10 / math.sqrt(1 - 0 * 0.1 + (3 - 1) / 4 * 0.01)
    assert stats.psr_from_moments(0.1, 101, 0.0, 3.0) == pytest.approx(sps.norm.cdf(z), rel=1e-12)
    # negative skew and fat tails make the same Sharpe less convincing
    assert stats.psr_from_moments(0.1, 101, -2.0, 9.0) < stats.psr_from_moments(0.1, 101, 0, 3)


def test_psr_of_the_benchmark_itself_is_one_half():
    r = np.random.default_rng(1).standard_t(5, 500) * 0.01 + 0.0004
    sr = stats.sharpe_ratio(r)
    assert stats.probabilistic_sharpe_ratio(r, benchmark=sr) == pytest.approx(0.5, abs=1e-12)


def test_psr_uses_sample_moments_of_the_returns():
    r = np.random.default_rng(2).lognormal(0, 0.5, 300) - 1.05
    sr = r.mean() / r.std(ddof=1)
    skew = sps.skew(r, bias=False)
    kurt = sps.kurtosis(r, fisher=False, bias=False)
    expected = sps.norm.cdf(sr * math.sqrt(299) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))
    assert stats.probabilistic_sharpe_ratio(r) == pytest.approx(expected, rel=1e-12)


def test_sharpe_matches_quantstats_convention():
    qs = pytest.importorskip("quantstats")
    import pandas as pd

    r = pd.Series(np.random.default_rng(3).normal(0.0005, 0.01, 400))
    assert stats.sharpe_ratio(r, 252) == pytest.approx(qs.stats.sharpe(r), rel=1e-12)
    assert math.isnan(stats.sharpe_ratio(np.zeros(50)))
    assert math.isnan(stats.sharpe_ratio([0.01]))


def test_expected_max_sharpe_grows_with_trials_and_needs_selection():
    assert stats.expected_max_sharpe(1, 0.01) == 0.0
    assert stats.expected_max_sharpe(10, 0.0) == 0.0
    values = [stats.expected_max_sharpe(n, 0.01) for n in (2, 10, 100, 1000)]
    assert values == sorted(values) and values[0] > 0
    with pytest.raises(ValueError, match="n_trials"):
        stats.expected_max_sharpe(0, 0.01)


def test_expected_max_sharpe_against_simulated_maxima():
    # Reference twin: the mean maximum of N independent normal Sharpe estimates.
    rng = np.random.default_rng(4)
    n, sd = 50, 0.05
    simulated = rng.normal(0, sd, size=(20_000, n)).max(axis=1).mean()
    assert stats.expected_max_sharpe(n, sd**2) == pytest.approx(simulated, rel=0.03)


def test_dsr_is_below_psr_and_counts_trials():
    rng = np.random.default_rng(5)
    r = rng.normal(0.001, 0.01, 1000)
    trials = rng.normal(0.0, 0.03, 20)
    psr = stats.probabilistic_sharpe_ratio(r)
    dsr = stats.deflated_sharpe_ratio(r, trials)
    assert dsr < psr
    assert stats.deflated_sharpe_ratio(r, trials, n_trials=200) < dsr
    # a single trial means no selection: DSR = PSR against zero
    assert stats.deflated_sharpe_ratio(r, [0.05]) == pytest.approx(psr)


# Bootstrap --------------------------------------------------------------------


def _reference_stationary_indices(n, samples, mean_block, rng):
    """Loop version of the stationary bootstrap consuming the same random draws."""
    starts = rng.integers(0, n, size=(samples, n))
    new_block = rng.random((samples, n)) < 1.0 / mean_block
    out = np.empty((samples, n), dtype=int)
    for s in range(samples):
        for t in range(n):
            if t == 0 or new_block[s, t]:
                out[s, t] = starts[s, t]
            else:
                out[s, t] = (out[s, t - 1] + 1) % n
    return out


def test_stationary_bootstrap_against_loop_reference():
    got = stats.stationary_bootstrap_indices(37, 25, 4.0, np.random.default_rng(6))
    ref = _reference_stationary_indices(37, 25, 4.0, np.random.default_rng(6))
    np.testing.assert_array_equal(got, ref)


def test_stationary_bootstrap_block_lengths_have_the_requested_mean():
    idx = stats.stationary_bootstrap_indices(2000, 50, 10.0, np.random.default_rng(7))
    continues = (np.diff(idx, axis=1) % 2000) == 1
    # a block ends where the next index is not the successor (probability 1/block,
    # less the rare case where a new block happens to start at the successor)
    assert 1 - continues.mean() == pytest.approx(0.1, abs=0.01)
    assert idx.min() >= 0 and idx.max() < 2000
    with pytest.raises(ValueError, match="block"):
        stats.stationary_bootstrap_indices(10, 5, 0.5, np.random.default_rng(0))


def test_paired_resampling_keeps_days_together():
    # strategy = benchmark exactly: every resample must give a difference of 0
    r = np.random.default_rng(8).normal(0.0005, 0.01, 300)
    ci = stats.sharpe_difference_ci(r, r.copy(), samples=200, block=5, seed=1)
    assert ci.estimate == 0 and ci.low == 0 and ci.high == 0
    # strategy = benchmark + tiny noise: the CI is narrow only if days stay paired
    noisy = r + np.random.default_rng(9).normal(0, 1e-5, 300)
    ci = stats.sharpe_difference_ci(noisy, r, samples=200, block=5, seed=1)
    assert ci.high - ci.low < 0.05


def test_bootstrap_ci_covers_the_true_difference():
    # Simulated daily returns with known annualised Sharpe ratios 1.0 and 0.0
    # (correlated 0.5): the 90% interval must cover the true difference of 1.0
    # in roughly 90% of independent experiments.
    rng = np.random.default_rng(10)
    sd = 0.01
    mu = 1.0 / math.sqrt(252) * sd
    covered, experiments, widths = 0, 60, []
    for k in range(experiments):
        z = rng.normal(size=(2, 1000))
        bench = sd * z[0]
        strat = mu + sd * (0.5 * z[0] + math.sqrt(0.75) * z[1])
        ci = stats.sharpe_difference_ci(strat, bench, samples=300, block=5, level=0.9, seed=k)
        assert ci.low <= ci.estimate <= ci.high
        covered += ci.low <= 1.0 <= ci.high
        widths.append(ci.high - ci.low)
    assert 0.75 <= covered / experiments <= 0.98
    # and not by being uselessly wide: the delta-method standard error of the
    # difference is sqrt(252 / 1000 * 2 * (1 - 0.5)) = 0.50, so a 90% width of ~1.65
    assert 1.3 <= np.mean(widths) <= 2.0


def test_bootstrap_is_seeded_and_detects_a_large_edge():
    rng = np.random.default_rng(11)
    bench = rng.normal(0, 0.01, 1500)
    strat = bench + 0.002 + rng.normal(0, 0.002, 1500)
    a = stats.sharpe_difference_ci(strat, bench, samples=300, block=10, seed=3)
    b = stats.sharpe_difference_ci(strat, bench, samples=300, block=10, seed=3)
    assert a == b
    assert a.significant and a.low > 0 and a.pvalue < 0.05


def test_bootstrap_rejects_unpaired_input():
    with pytest.raises(ValueError, match="paired"):
        stats.sharpe_difference_ci(np.zeros(10), np.zeros(11))


# Cost sweep -------------------------------------------------------------------


def test_break_even_interpolates_the_first_crossing():
    be = stats.break_even_cost([0, 10, 20, 50], [0.6, 0.2, -0.2, -0.5])
    assert be.status == "crosses" and be.cost_bp == pytest.approx(15.0)
    assert be.describe(50) == "15.0 bp"


def test_break_even_outside_the_range():
    assert stats.break_even_cost([0, 10], [-0.1, -0.3]).status == "never"
    always = stats.break_even_cost([0, 10, 50], [0.5, 0.4, 0.1])
    assert always.status == "always" and always.cost_bp is None
    assert always.describe(50) == "> 50 bp"
    # unsorted input is sorted by cost first
    assert stats.break_even_cost([20, 0, 10], [-1.0, 1.0, 0.0]).cost_bp == pytest.approx(10.0)


def test_seed_summary():
    out = stats.seed_summary([{"sharpe": 1.0, "trades": 4}, {"sharpe": 2.0, "trades": 6}])
    assert out["sharpe"] == pytest.approx((1.5, math.sqrt(0.5)))
    assert out["trades"] == pytest.approx((5.0, math.sqrt(2.0)))
    single = stats.seed_summary([{"sharpe": 1.0}])
    assert single["sharpe"][0] == 1.0 and math.isnan(single["sharpe"][1])


def test_seed_summary_with_an_infinite_metric():
    out = stats.seed_summary([{"profit_factor": math.inf}, {"profit_factor": 2.0}])
    assert out["profit_factor"][0] == math.inf and math.isnan(out["profit_factor"][1])
