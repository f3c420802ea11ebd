"""Honest statistics for the comparison: PSR, DSR, bootstrap CIs, cost break-even.

Conventions, used everywhere in the report:

- Returns are simple per-bar returns of a strategy's equity curve, in excess
  of the risk-free rate when one is configured (the caller subtracts it).
- A *per-period* Sharpe ratio is ``mean / std`` (``ddof=1``) of those
  returns; the *annualised* one multiplies by ``sqrt(P)``, P the bars per
  year (252 for daily equity bars; ``core.periods``), which is the
  convention of quantstats. Both come from ``core.periods``, as do the
  backtest metrics' (``sharpe_ratio`` is re-exported here for the report).
- Skewness and kurtosis are the sample moments from ``scipy.stats`` (kurtosis
  is Pearson's, 3 for a normal distribution), as in Bailey & López de Prado.

References:
    Bailey, D. H. and López de Prado, M. (2012). The Sharpe ratio efficient
    frontier. Journal of Risk 15(2). (probabilistic Sharpe ratio, eq. 11)
    Bailey, D. H. and López de Prado, M. (2014). The deflated Sharpe ratio:
    correcting for selection bias, backtest overfitting and non-normality.
    Journal of Portfolio Management 40(5). (expected maximum Sharpe, DSR)
    Politis, D. N. and Romano, J. P. (1994). The stationary bootstrap. JASA
    89(428). (resampling of dependent daily returns)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from core.periods import PERIODS_PER_YEAR, annualise_sharpe, per_period_sharpe, sharpe_ratio

__all__ = [
    "BreakEven",
    "SharpeDifference",
    "break_even_cost",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "psr_from_moments",
    "seed_summary",
    "sharpe_difference_ci",
    "sharpe_ratio",
    "stationary_bootstrap_indices",
]


def _clean(returns: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(returns, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"returns must be one-dimensional, got shape {arr.shape}")
    return arr[np.isfinite(arr)]


def psr_from_moments(
    sharpe: float, n: int, skew: float, kurtosis: float, benchmark: float = 0.0
) -> float:
    """Probabilistic Sharpe ratio from the moments of the returns.

    ``PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2))``
    with per-period ``SR`` and ``SR*`` and Pearson ``kurtosis`` (3 = normal).
    """
    if n < 2 or not np.isfinite(sharpe):
        return float("nan")
    var = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if var <= 0:
        # Only reachable with moments no sample can have; refuse rather than guess.
        return float("nan")
    z = (sharpe - benchmark) * np.sqrt(n - 1) / np.sqrt(var)
    return float(sps.norm.cdf(z))


def probabilistic_sharpe_ratio(
    returns: Sequence[float] | np.ndarray, benchmark: float = 0.0
) -> float:
    """Probability that the true per-period Sharpe ratio exceeds ``benchmark``.

    Args:
        returns: daily (excess) returns.
        benchmark: the per-period Sharpe ratio to beat (0 = "is it positive?").
    """
    r = _clean(returns)
    sr = sharpe_ratio(r)
    if not np.isfinite(sr):
        return float("nan")
    skew = float(sps.skew(r, bias=False))
    kurt = float(sps.kurtosis(r, fisher=False, bias=False))
    return psr_from_moments(sr, r.size, skew, kurt, benchmark)


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """Expected maximum per-period Sharpe ratio of ``n_trials`` unskilled trials.

    ``E[max SR] = sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e)))``
    with ``g`` the Euler-Mascheroni constant and ``V`` the variance of the
    trials' Sharpe ratios. With one trial there is no selection: 0.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if n_trials == 1 or not np.isfinite(variance) or variance <= 0:
        return 0.0
    g = np.euler_gamma
    z1 = sps.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = sps.norm.ppf(1.0 - 1.0 / (n_trials * np.e))
    return float(np.sqrt(variance) * ((1.0 - g) * z1 + g * z2))


def deflated_sharpe_ratio(
    returns: Sequence[float] | np.ndarray,
    trial_sharpes: Sequence[float] | np.ndarray,
    n_trials: int | None = None,
) -> float:
    """PSR against the Sharpe ratio the best of N unskilled trials would reach.

    Args:
        returns: daily (excess) returns of the strategy being judged.
        trial_sharpes: per-period Sharpe ratios of every configuration run in
            the experiment (the strategy's own included); their variance sets
            how lucky the best one could be by chance.
        n_trials: number of trials; defaults to the number of finite
            ``trial_sharpes``.
    """
    trials = _clean(trial_sharpes)
    n = int(n_trials if n_trials is not None else trials.size)
    if n < 1:
        return float("nan")
    variance = float(trials.var(ddof=1)) if trials.size > 1 else 0.0
    return probabilistic_sharpe_ratio(returns, expected_max_sharpe(n, variance))


# Bootstrap --------------------------------------------------------------------


def stationary_bootstrap_indices(
    n: int, samples: int, mean_block: float, rng: np.random.Generator
) -> np.ndarray:
    """Index arrays of the stationary bootstrap, shape ``(samples, n)``.

    Each resample is built from blocks that start at a uniform random position
    and have geometric lengths of mean ``mean_block``, wrapping around the end
    of the series (circular), so serial dependence within blocks is kept.
    """
    if n < 1 or samples < 1:
        raise ValueError(f"need n >= 1 and samples >= 1, got n={n}, samples={samples}")
    if mean_block < 1:
        raise ValueError(f"mean block length must be at least 1 bar, got {mean_block}")
    starts = rng.integers(0, n, size=(samples, n))
    new_block = rng.random((samples, n)) < 1.0 / mean_block
    new_block[:, 0] = True
    t = np.arange(n)
    # Position of the most recent block start at or before each t.
    block_pos = np.maximum.accumulate(np.where(new_block, t, 0), axis=1)
    first = np.take_along_axis(starts, block_pos, axis=1)
    return (first + (t - block_pos)) % n


@dataclass(frozen=True)
class SharpeDifference:
    """Annualised Sharpe ratio of a strategy minus the benchmark's, with a bootstrap CI.

    Args:
        estimate: the difference on the observed returns.
        low, high: percentile confidence bounds at ``level``.
        level: confidence level, e.g. 0.95.
        pvalue: two-sided bootstrap p-value of "no difference".
        samples: resamples drawn.
    """

    estimate: float
    low: float
    high: float
    level: float
    pvalue: float
    samples: int

    @property
    def significant(self) -> bool:
        """True when the interval excludes zero."""
        return bool(self.low > 0 or self.high < 0)


def sharpe_difference_ci(
    strategy: Sequence[float] | np.ndarray,
    benchmark: Sequence[float] | np.ndarray,
    *,
    samples: int = 1000,
    block: float = 20,
    level: float = 0.95,
    seed: int = 0,
    periods_per_year: float = PERIODS_PER_YEAR,
) -> SharpeDifference:
    """Bootstrap CI of ``Sharpe(strategy) - Sharpe(benchmark)`` on paired daily returns.

    Both series are resampled with the *same* indices, so each resampled day
    keeps the two returns of one calendar day together (their correlation is
    what makes the difference estimable at all).

    Args:
        strategy, benchmark: daily (excess) returns on the same dates.
        samples: bootstrap resamples.
        block: stationary-bootstrap mean block length in bars.
        level: confidence level of the percentile interval.
        seed: seed of the resampling (results are reproducible).
        periods_per_year: bars per year, to annualise both Sharpe ratios.
    """
    a = np.asarray(strategy, dtype=float)
    b = np.asarray(benchmark, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired returns need the same 1-D shape, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    estimate = sharpe_ratio(a, periods_per_year) - sharpe_ratio(b, periods_per_year)
    if a.size < 3 or not np.isfinite(estimate):
        nan = float("nan")
        return SharpeDifference(estimate, nan, nan, level, nan, 0)
    idx = stationary_bootstrap_indices(a.size, samples, block, np.random.default_rng(seed))
    annual = [annualise_sharpe(per_period_sharpe(x[idx], axis=1), periods_per_year) for x in (a, b)]
    diffs = annual[0] - annual[1]
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        nan = float("nan")
        return SharpeDifference(estimate, nan, nan, level, nan, 0)
    alpha = 1.0 - level
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    # Two-sided: how often the resampled difference lands on the other side of zero.
    share_below = float(np.mean(diffs <= 0))
    pvalue = min(1.0, 2 * min(share_below, 1 - share_below))
    return SharpeDifference(float(estimate), float(low), float(high), level, pvalue, diffs.size)


# Cost sweep -------------------------------------------------------------------


@dataclass(frozen=True)
class BreakEven:
    """Commission (bp) at which a strategy's Sharpe edge over the benchmark vanishes.

    Args:
        cost_bp: the interpolated cost, or None when the edge has no zero in range.
        status: ``"crosses"``, ``"never"`` (no edge even at the lowest cost) or
            ``"always"`` (still ahead at the highest cost).
    """

    cost_bp: float | None
    status: str

    def describe(self, max_bp: float) -> str:
        if self.status == "crosses":
            return f"{self.cost_bp:.1f} bp"
        if self.status == "always":
            return f"> {max_bp:g} bp"
        return "no edge"


def break_even_cost(costs_bp: Sequence[float], edge: Sequence[float]) -> BreakEven:
    """First commission at which ``edge`` (Sharpe minus benchmark Sharpe) drops to <= 0.

    Linear interpolation between the two sweep points that bracket the first
    sign change from positive to non-positive.
    """
    c = np.asarray(costs_bp, dtype=float)
    e = np.asarray(edge, dtype=float)
    if c.shape != e.shape or c.size == 0:
        raise ValueError(f"costs and edges must be non-empty and aligned, got {c.shape}, {e.shape}")
    order = np.argsort(c)
    c, e = c[order], e[order]
    keep = np.isfinite(e)
    c, e = c[keep], e[keep]
    if c.size == 0 or e[0] <= 0:
        return BreakEven(None, "never")
    below = np.flatnonzero(e <= 0)
    if below.size == 0:
        return BreakEven(None, "always")
    j = int(below[0])
    c0, c1, e0, e1 = c[j - 1], c[j], e[j - 1], e[j]
    return BreakEven(float(c0 + (c1 - c0) * e0 / (e0 - e1)), "crosses")


# Seeds ------------------------------------------------------------------------


def seed_summary(runs: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and sample standard deviation of each numeric metric across seeds.

    The standard deviation is NaN with a single seed (no spread to estimate).
    """
    if not runs:
        return {}
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    out: dict[str, tuple[float, float]] = {}
    for key in keys:
        try:
            values = np.array([float(r[key]) for r in runs], dtype=float)
        except (TypeError, ValueError):
            continue
        # e.g. an infinite profit factor (no losing trade) has a mean but no spread
        spread = values.size > 1 and np.isfinite(values).all()
        std = float(np.std(values, ddof=1)) if spread else float("nan")
        out[key] = (float(np.mean(values)), std)
    return out
