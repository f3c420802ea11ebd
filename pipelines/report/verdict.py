"""The verdict: plain sentences on whether the candidate beat the baselines, and how surely.

Each sentence is built from the league rows of one instrument (or the pooled
rows), so the text follows the numbers: the candidate's strategy's rank by Sharpe
ratio, the spread over its seeds, its Sharpe ratio against buy-and-hold with
the bootstrap interval, the deflated Sharpe ratio, its rank as a forecaster
and the Diebold-Mariano test against the random walk, then a bottom line.
The outcome word (``win``, ``loss``, ``mixed``) colours the report's box. The
candidate is the forecaster ``report.candidate`` names (the LSTM by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.report.comparison import fmt as _fmt


def fmt(value: float, digits: int = 2) -> str:
    """``comparison.fmt`` without a minus sign on a value that rounds to zero ("-0.00")."""
    text = _fmt(value, digits)
    return text[1:] if text.startswith("-") and text.strip("-0.") == "" else text


def _signed(value: float) -> str:
    """ "+0.12", "-0.30", or "0.00" when it rounds to zero."""
    text = f"{value:+.2f}"
    return "0.00" if text.strip("+-0.") == "" else text


@dataclass
class _Findings:
    """What the bottom line is made of."""

    beat_sharpe: bool = False
    beat_forecast: bool = False
    sig_bh: bool = False
    dsr_ok: bool = False
    sig_forecast: bool = False


def _sharpe_sentences(
    main: pd.DataFrame, cand: pd.Series, label: str, found: _Findings
) -> list[str]:
    """The candidate strategy's rank by Sharpe ratio, and its spread over the seeds."""
    sentences = []
    others = main.drop(index=cand.name)["sharpe"].dropna()
    best_name = others.idxmax() if not others.empty else None
    found.beat_sharpe = bool(
        np.isfinite(cand["sharpe"]) and (others.empty or cand["sharpe"] > others.max())
    )
    ranked = main["sharpe"].rank(ascending=False, method="min")
    if not np.isfinite(cand["sharpe"]):
        sentences.append(
            f"By Sharpe ratio: undefined for the {label} strategy (it never held a position)."
        )
    else:
        lead = (
            f"By Sharpe ratio the {label} strategy ranks {int(ranked[cand.name])} of "
            f"{int(main['sharpe'].notna().sum())} "
            f"({fmt(cand['sharpe'])})"
        )
        if best_name is None:
            sentences.append(lead + ".")
        elif found.beat_sharpe:
            sentences.append(
                f"{lead} and beats every baseline; the next best is {best_name} "
                f"({fmt(others.max())})."
            )
        else:
            sentences.append(
                f"{lead}: it does not beat the baselines; the best is {best_name} "
                f"({fmt(others.max())})."
            )
    if np.isfinite(cand.get("sharpe_seed_std", math.nan)):
        sentences.append(
            f"Across {int(cand['seeds'])} seeds its Sharpe ratio is "
            f"{fmt(cand['sharpe_seed_mean'])} ± {fmt(cand['sharpe_seed_std'])}."
        )
    return sentences


def _significance_sentences(
    block: pd.DataFrame,
    cand: pd.Series,
    alpha: float,
    n_trials: int,
    found: _Findings,
    benchmark: str,
) -> list[str]:
    """The Sharpe edge over the benchmark with its interval, and the deflated Sharpe ratio."""
    sentences = []
    level = round(100 * (1 - alpha))
    if benchmark in block.index and np.isfinite(cand["sharpe_diff"]):
        low, high = cand["sharpe_diff_low"], cand["sharpe_diff_high"]
        found.sig_bh = bool(low > 0)
        if low > 0:
            judged = "significantly better than buy-and-hold"
        elif high < 0:
            judged = "significantly worse than buy-and-hold"
        else:
            judged = "not significantly different from buy-and-hold (the interval contains 0)"
        sentences.append(
            f"Sharpe ratio minus buy-and-hold's: {_signed(cand['sharpe_diff'])} "
            f"({level}% bootstrap interval {fmt(low)} to {fmt(high)}), {judged}."
        )
    found.dsr_ok = bool(np.isfinite(cand["dsr"]) and cand["dsr"] > 1 - alpha)
    if np.isfinite(cand["dsr"]):
        sentences.append(
            f"Deflated Sharpe ratio {fmt(cand['dsr'])} after {n_trials} trials "
            f"(PSR {fmt(cand['psr'])}): "
            + (
                f"the Sharpe ratio is significant at {alpha:g} even allowing for selection."
                if found.dsr_ok
                else f"not significant at {alpha:g} once the number of trials is accounted for."
            )
        )
    return sentences


def _forecast_sentences(
    main: pd.DataFrame, cand: pd.Series, label: str, alpha: float, found: _Findings
) -> list[str]:
    """The candidate's rank as a forecaster, and the Diebold-Mariano test against the random
    walk."""
    sentences = []
    forecasters = main[main["kind"] == "forecast"]["rmse"].dropna()
    fcol = "rmse" if not forecasters.empty else "theil_u2"
    forecasters = main[main["kind"] == "forecast"][fcol].dropna()
    if cand.name not in forecasters.index or len(forecasters) <= 1:
        return sentences
    rest = forecasters.drop(index=cand.name)
    found.beat_forecast = bool(forecasters[cand.name] < rest.min())
    rank = int(forecasters.rank(method="min")[cand.name])
    u2 = cand["theil_u2"]
    sentence = (
        f"As a forecaster the {label} ranks {rank} of {len(forecasters)} by "
        f"{'RMSE' if fcol == 'rmse' else 'Theil U2'}"
    )
    sentence += (
        " (the most accurate)."
        if found.beat_forecast
        else f"; the most accurate is {rest.idxmin()}."
    )
    sentences.append(sentence)
    dm, p = cand["dm_statistic"], cand["dm_p_value"]
    if np.isfinite(u2) and np.isfinite(p):
        better = u2 < 1
        found.sig_forecast = bool(better and p < alpha)
        shown = fmt(u2, 3)
        if shown == "1.000":  # the error ratio rounds to 1: say so rather than "lower"
            error = f"{fmt(u2, 5)}, the same error to three decimals"
        else:
            error = f"{shown}, {'lower' if better else 'higher'} error"
        direction = "more" if better else "less"
        judged = (
            f"significantly {direction} accurate"
            if p < alpha
            else f"{direction} accurate, but not significantly"
        )
        sentences.append(
            f"Against the random walk: Theil U2 {error}; Diebold-Mariano {fmt(dm)}, "
            f"p = {fmt(p, 3)}: {judged}."
        )
    return sentences


def _bottom_line(found: _Findings, label: str) -> tuple[str, str]:
    """The last sentence and the outcome word."""
    trade_sig = found.sig_bh and found.dsr_ok
    beat_sharpe, beat_forecast = found.beat_sharpe, found.beat_forecast
    if beat_sharpe and beat_forecast:
        what = "beat every baseline by Sharpe ratio and by forecast accuracy"
    elif beat_sharpe:
        what = "beat every baseline by Sharpe ratio but not by forecast accuracy"
    elif beat_forecast:
        what = "forecast most accurately but did not beat every baseline by Sharpe ratio"
    else:
        what = "did not beat the baselines, by Sharpe ratio or by forecast accuracy"
    if beat_sharpe or beat_forecast:
        details = []
        if beat_sharpe:
            details.append(
                "its Sharpe edge over buy-and-hold is statistically significant "
                "(bootstrap interval above 0 and DSR)"
                if trade_sig
                else "its Sharpe edge over buy-and-hold is not statistically significant"
            )
        if beat_forecast:
            details.append(
                "its accuracy edge over the random walk is "
                + ("" if found.sig_forecast else "not ")
                + "statistically significant (Diebold-Mariano)"
            )
        sentence = f"Bottom line: the {label} {what}; {'; '.join(details)}."
    else:
        extras = []
        if trade_sig:
            extras.append("its Sharpe ratio is still significantly above buy-and-hold's")
        if found.sig_forecast:
            extras.append("it is still significantly more accurate than the random walk")
        tail = (
            ", although " + " and ".join(extras)
            if extras
            else ", and shows no statistically significant edge"
        )
        sentence = f"Bottom line: the {label} {what}{tail}."
    outcome = (
        "win"
        if (beat_sharpe or beat_forecast) and (trade_sig or found.sig_forecast)
        else ("loss" if not (beat_sharpe or beat_forecast) else "mixed")
    )
    return sentence, outcome


def verdict(
    block: pd.DataFrame,
    alpha: float,
    n_trials: int,
    candidate: str,
    label: str,
    benchmark: str,
) -> tuple[list[str], str]:
    """Plain sentences on whether ``candidate`` beat the baselines, and whether it is
    significant.

    Args:
        block: the league rows of one instrument (or pooled), indexed by strategy.
        alpha: significance level.
        n_trials: trials behind the deflated Sharpe ratio.
        candidate: the judged forecaster's strategy (``report.candidate``).
        label: how the sentences call it (``Config.candidate_label``: "LSTM").

    Returns:
        The sentences and a one-word outcome (``win``, ``loss`` or ``mixed``).
    """
    if candidate not in block.index:
        return [f"No {label} forecasts in this experiment: nothing to judge."], "mixed"
    main = block[block["kind"] != "seed"]
    cand = block.loc[candidate]
    found = _Findings()
    sentences = _sharpe_sentences(main, cand, label, found)
    sentences += _significance_sentences(block, cand, alpha, n_trials, found, benchmark)
    sentences += _forecast_sentences(main, cand, label, alpha, found)
    last, outcome = _bottom_line(found, label)
    return [*sentences, last], outcome
