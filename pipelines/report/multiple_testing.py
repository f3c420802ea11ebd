"""Answers that survive multiple testing: which strategies beat buy-and-hold, and where.

The league table asks "did it beat the benchmark?" once per strategy and
instrument. Asked that often, some answers look significant by chance; this
module gives the answers corrected for the number of questions.

**Does any strategy beat the benchmark, and which?** (per instrument and pooled)

- Losses are the negated daily excess returns (``arch.bootstrap`` ranks
  *losses*, lower is better), aligned on the dates every strategy has, so a
  strategy "beats" buy-and-hold when its mean daily excess return is higher.
- Hansen's test of superior predictive ability (``arch.bootstrap.SPA``,
  studentized): H0 "no strategy has a higher expected return than the
  benchmark". Its lower, consistent and upper p-values are kept; the
  consistent one is Hansen's recommended answer.
- White's reality check beside it: the same null with non-studentized
  statistics and no recentring of poor strategies, i.e. the ``upper``
  p-value of ``arch.bootstrap.RealityCheck(studentize=False)``. It loses power
  when the family holds bad strategies, which is why SPA is the headline.
- Romano and Wolf's step-down procedure (``arch.bootstrap.StepM``) names the
  strategies that beat the benchmark with the family-wise error rate held at
  ``size``.
- All three use the stationary bootstrap with the report's mean block length
  (``report.bootstrap.block``), ``report.bootstrap.samples`` resamples and the
  experiment's ``seed``, so a rerun gives the same p-values.
- A strategy whose returns equal the benchmark's on every date (its loss
  differential has no variance) cannot be studentized; it is left out of the
  family and listed in ``excluded``.

**Across instruments** (one test per instrument, m instruments)

- The candidate's (``report.candidate``) Diebold-Mariano p-value against the
  random walk and its Sharpe difference p-value against buy-and-hold (both
  two-sided, from the league
  table) are adjusted with Holm (family-wise error) and Benjamini-Hochberg
  (false discovery rate) over the m instruments
  (``statsmodels.stats.multitest.multipletests``). A win counts as significant
  after correction only when the adjusted p-value is below the significance
  level *and* the estimate points the candidate's way.
- How many instruments the candidate wins on (Sharpe ratio above buy-and-hold's;
  forecast errors below the random walk's, i.e. a negative DM statistic) and
  a one-sided sign test of "wins on more than half" (``scipy.stats.binomtest``).

Everything returned is a plain dataclass or DataFrame; ``pipelines.report.multiple``
renders it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from arch.bootstrap import SPA, RealityCheck, StepM
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from pipelines.common.strategy_names import is_seed

__all__ = [
    "MIN_OBSERVATIONS",
    "AcrossInstruments",
    "METHODS",
    "SuperiorityTest",
    "WinCount",
    "adjust_pvalues",
    "across_instruments",
    "superiority_frame",
    "superiority_table",
    "superiority_test",
    "win_count",
]

# uncorrected, Holm (family-wise error), Benjamini-Hochberg (false discovery rate)
METHODS = ("raw", "holm", "bh")
# Fewer common dates than this leave the bootstrap nothing to resample in blocks.
MIN_OBSERVATIONS = 20


@dataclass(frozen=True)
class SuperiorityTest:
    """SPA, reality check and StepM of one family of strategies against one benchmark.

    Args:
        scope: the instrument, or ``pooled``.
        benchmark: the benchmark's name.
        strategies: the strategies tested (the family), in input order.
        n_obs: common dates the losses were aligned on.
        spa_lower, spa_consistent, spa_upper: Hansen's SPA p-values.
        reality_check: White's reality check p-value.
        superior: strategies StepM finds better than the benchmark, in input order.
        size: StepM's family-wise error rate.
        block: stationary-bootstrap mean block length; reps: resamples; seed: its seed.
        excluded: strategies left out (identical to the benchmark on every date).
    """

    scope: str
    benchmark: str
    strategies: tuple[str, ...]
    n_obs: int
    spa_lower: float
    spa_consistent: float
    spa_upper: float
    reality_check: float
    superior: tuple[str, ...]
    size: float
    block: int
    reps: int
    seed: int
    excluded: tuple[str, ...] = ()

    @property
    def tested(self) -> bool:
        """True when the tests ran (enough dates and at least one strategy)."""
        return math.isfinite(self.spa_consistent)


def _untested(
    scope: str, benchmark: str, names: Sequence[str], n_obs: int, **kw
) -> SuperiorityTest:
    nan = math.nan
    return SuperiorityTest(scope, benchmark, tuple(names), n_obs, nan, nan, nan, nan, (), **kw)


def superiority_test(
    returns: pd.DataFrame,
    benchmark: str,
    *,
    scope: str = "",
    size: float = 0.05,
    block: int = 20,
    reps: int = 1000,
    seed: int = 0,
) -> SuperiorityTest:
    """SPA, White's reality check and StepM of every column of ``returns`` against ``benchmark``.

    Args:
        returns: daily (excess) returns by date, one column per strategy, the
            benchmark's included; rows with any NaN are dropped (common dates).
        benchmark: the benchmark's column.
        scope: the instrument (or ``pooled``), kept in the result.
        size: StepM's family-wise error rate (the report's significance level).
        block: mean block length of the stationary bootstrap, in bars.
        reps: bootstrap resamples.
        seed: seed of the resampling.
    """
    if benchmark not in returns.columns:
        raise ValueError(f"{scope or 'returns'}: no benchmark column {benchmark!r}")
    aligned = returns.dropna(how="any").astype(float)
    names = [c for c in aligned.columns if c != benchmark]
    bench_loss = -aligned[benchmark]
    diffs = aligned[names].sub(aligned[benchmark], axis=0)
    flat = [n for n in names if not np.ptp(diffs[n].to_numpy()) > 0]
    family = [n for n in names if n not in flat]
    kw = dict(size=size, block=block, reps=reps, seed=seed, excluded=tuple(flat))
    if not family or len(aligned) < MIN_OBSERVATIONS:
        return _untested(scope, benchmark, family, len(aligned), **kw)
    losses = -aligned[family]
    common = dict(block_size=block, reps=reps, bootstrap="stationary", seed=seed)
    with warnings.catch_warnings():
        # arch warns when a resample's variance is tiny; the p-values stay defined
        warnings.simplefilter("ignore", RuntimeWarning)
        spa = SPA(bench_loss, losses, **common)
        spa.compute()
        rc = RealityCheck(bench_loss, losses, studentize=False, **common)
        rc.compute()
        stepm = StepM(bench_loss, losses, size=size, **common)
        stepm.compute()
    found = set(stepm.superior_models or [])
    return SuperiorityTest(
        scope=scope,
        benchmark=benchmark,
        strategies=tuple(family),
        n_obs=len(aligned),
        spa_lower=float(spa.pvalues["lower"]),
        spa_consistent=float(spa.pvalues["consistent"]),
        spa_upper=float(spa.pvalues["upper"]),
        reality_check=float(rc.pvalues["upper"]),
        superior=tuple(n for n in family if n in found),
        **kw,
    )


def superiority_table(
    excess: Mapping[str, Mapping[str, pd.Series]],
    benchmark: str,
    *,
    size: float,
    block: int,
    reps: int,
    seed: int,
) -> list[SuperiorityTest]:
    """``superiority_test`` of each scope's strategies (seeds left out) against ``benchmark``.

    Args:
        excess: scope (instrument or ``pooled``) -> strategy -> daily excess returns.
        benchmark: the strategy compared with (``report.benchmark``); a scope without it
            is left out.
        size, block, reps, seed: as ``superiority_test``.
    """
    out = []
    for scope, by_strategy in excess.items():
        if benchmark not in by_strategy:
            continue
        kept = {n: r for n, r in by_strategy.items() if not is_seed(n)}
        frame = pd.DataFrame(kept).sort_index()
        test = superiority_test(
            frame, benchmark, scope=scope, size=size, block=block, reps=reps, seed=seed
        )
        out.append(test)
    return out


def superiority_frame(tests: Sequence[SuperiorityTest]) -> pd.DataFrame:
    """The tests as one table, one row per scope (for CSV and the report)."""
    rows = [
        {
            "scope": t.scope,
            "strategies": len(t.strategies),
            "n_obs": t.n_obs,
            "spa_p_lower": t.spa_lower,
            "spa_p_consistent": t.spa_consistent,
            "spa_p_upper": t.spa_upper,
            "reality_check_p": t.reality_check,
            "stepm_superior": ", ".join(t.superior),
            "excluded": ", ".join(t.excluded),
        }
        for t in tests
    ]
    return pd.DataFrame(rows)


# Across instruments ------------------------------------------------------------------


def adjust_pvalues(pvalues: pd.Series, alpha: float = 0.05) -> pd.DataFrame:
    """Raw, Holm and Benjamini-Hochberg p-values of one family, and what each rejects at ``alpha``.

    Columns ``p_raw``, ``p_holm``, ``p_bh`` and ``reject_raw``, ``reject_holm``,
    ``reject_bh``.

    NaN p-values (a test that could not run) stay NaN and are not counted in
    the family.

    Args:
        pvalues: one p-value per test, indexed by the test's name.
        alpha: the significance level.
    """
    p = pd.Series(pvalues, dtype=float)
    out = pd.DataFrame({"p_raw": p, "p_holm": np.nan, "p_bh": np.nan}, index=p.index)
    known = p.notna()
    if known.any():
        values = p[known].to_numpy()
        out.loc[known, "p_holm"] = multipletests(values, alpha=alpha, method="holm")[1]
        out.loc[known, "p_bh"] = multipletests(values, alpha=alpha, method="fdr_bh")[1]
    for method in METHODS:
        out[f"reject_{method}"] = out[f"p_{method}"] < alpha
    return out


@dataclass(frozen=True)
class WinCount:
    """How many instruments the candidate wins on, with a one-sided sign test against one half.

    Args:
        wins: instruments won; n: instruments with a defined answer.
        pvalue: P(at least ``wins`` of ``n`` | each a coin flip).
    """

    wins: int
    n: int
    pvalue: float


def win_count(wins: Sequence[bool]) -> WinCount:
    """Count ``wins`` and test "more than half" with an exact one-sided binomial (sign) test."""
    won, n = int(sum(bool(w) for w in wins)), len(wins)
    p = float(sps.binomtest(won, n, 0.5, alternative="greater").pvalue) if n else math.nan
    return WinCount(won, n, p)


@dataclass(frozen=True)
class AcrossInstruments:
    """The candidate's per-instrument tests corrected over the instruments, and its win counts.

    Args:
        table: one row per instrument: ``sharpe_diff``, ``dm_statistic`` and,
            for each family (``sharpe``: Sharpe difference vs buy-and-hold,
            ``dm``: Diebold-Mariano vs the random walk), the raw, Holm and BH
            p-values and the significant *wins* (``<family>_win_<raw|holm|bh>``:
            adjusted p below alpha and the estimate in the candidate's favour).
        sharpe_wins: the candidate's Sharpe ratio above buy-and-hold's.
        forecast_wins: the candidate's forecast errors below the random walk's (DM < 0).
        alpha: the significance level.
    """

    table: pd.DataFrame
    sharpe_wins: WinCount
    forecast_wins: WinCount
    alpha: float
    tests: dict[str, int] = field(default_factory=dict)

    def significant(self, family: str, method: str) -> int:
        """Instruments where the candidate wins ``family`` significantly under ``method``."""
        return int(self.table[f"{family}_win_{method}"].sum())


def across_instruments(
    league: pd.DataFrame, candidate: str, alpha: float = 0.05
) -> AcrossInstruments | None:
    """Correct ``candidate``'s per-instrument p-values over the instruments; count its wins.

    Args:
        league: the league table (``pipelines.report.comparison``); the pooled rows are ignored.
        candidate: the strategy judged (``report.candidate``).
        alpha: the significance level.

    Returns:
        None when the league has no rows of ``candidate``.
    """
    rows = league[(league["strategy"] == candidate) & (league["instrument"] != "pooled")]
    if rows.empty:
        return None
    rows = rows.set_index("instrument")
    table = pd.DataFrame(index=rows.index)
    table["sharpe_diff"] = rows["sharpe_diff"].astype(float)
    table["dm_statistic"] = rows["dm_statistic"].astype(float)
    favour = {"sharpe": table["sharpe_diff"] > 0, "dm": table["dm_statistic"] < 0}
    sources = {"sharpe": "sharpe_diff_p_value", "dm": "dm_p_value"}
    tests = {}
    for family, column in sources.items():
        adjusted = adjust_pvalues(rows[column], alpha)
        tests[family] = int(adjusted["p_raw"].notna().sum())
        for method in METHODS:
            p = adjusted[f"p_{method}"]
            table[f"{family}_p_{method}"] = p
            table[f"{family}_win_{method}"] = (p < alpha) & favour[family]
    sharpe = [d > 0 for d in table["sharpe_diff"] if math.isfinite(d)]
    forecast = [s < 0 for s in table["dm_statistic"] if math.isfinite(s) and s != 0]
    return AcrossInstruments(table, win_count(sharpe), win_count(forecast), alpha, tests)
