"""The verdict: plain sentences on whether the candidate beat the baselines, and how surely.

Each sentence is built from the league rows of one instrument (or the pooled
rows), so the text follows the numbers: the candidate's strategy's rank by Sharpe
ratio, the spread over its seeds, its Sharpe ratio against the benchmark (``report.benchmark``,
buy-and-hold by default) with
the bootstrap interval, the deflated Sharpe ratio, its rank as a forecaster
and the Diebold-Mariano test against the random walk, then a bottom line.
The outcome word (``win``, ``loss``, ``mixed``) colours the report's box. The
candidate is the forecaster ``report.candidate`` names (the LSTM by default).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.common.outputs import shown
from pipelines.report.comparison import fmt as _fmt

#: The verdicts as data, beside the page: per instrument and pooled, headlines, outcome
#: and sentences.
VERDICT_FILE = "verdict.json"


def fmt(value: float, digits: int = 2) -> str:
    """``comparison.fmt`` without a minus sign on a value that rounds to zero ("-0.00")."""
    text = _fmt(value, digits)
    return text[1:] if text.startswith("-") and text.strip("-0.") == "" else text


def benchmark_name(benchmark: str) -> str:
    """The benchmark strategy as the sentences name it: ``buy_and_hold`` is "buy-and-hold"."""
    return benchmark.replace("_", "-")


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
    worse_bh: bool = False  # Sharpe ratio significantly below the benchmark's
    worse_forecast: bool = False  # significantly less accurate than the random walk


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
        found.worse_bh = bool(high < 0)
        shown = benchmark_name(benchmark)
        if low > 0:
            judged = f"significantly better than {shown}"
        elif high < 0:
            judged = f"significantly worse than {shown}"
        else:
            judged = f"not significantly different from {shown} (the interval contains 0)"
        sentences.append(
            f"Sharpe ratio minus {shown}'s: {_signed(cand['sharpe_diff'])} "
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
        found.worse_forecast = bool(not better and p < alpha)
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


def _bottom_line(found: _Findings, label: str, benchmark: str) -> tuple[str, str]:
    """The last sentence and the outcome word."""
    shown = benchmark_name(benchmark)
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
                f"its Sharpe edge over {shown} is statistically significant "
                "(bootstrap interval above 0 and DSR)"
                if trade_sig
                else f"its Sharpe edge over {shown} is not statistically significant"
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
            extras.append(f"its Sharpe ratio is still significantly above {shown}'s")
        if found.sig_forecast:
            extras.append("it is still significantly more accurate than the random walk")
        tail = (
            ", although " + " and ".join(extras)
            if extras
            else ", and shows no statistically significant edge"
        )
        sentence = f"Bottom line: the {label} {what}{tail}."
    if found.worse_bh or found.worse_forecast:
        outcome = "loss"  # significantly worse on one count is never "mixed"
    elif (beat_sharpe or beat_forecast) and (trade_sig or found.sig_forecast):
        outcome = "win"
    else:
        outcome = "loss" if not (beat_sharpe or beat_forecast) else "mixed"
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
    last, outcome = _bottom_line(found, label, benchmark)
    return [*sentences, last], outcome


# Headlines --------------------------------------------------------------------------------


def _trading_word(row: pd.Series) -> str:
    """How the candidate's Sharpe ratio compares with the benchmark's, by its interval."""
    low, high = row.get("sharpe_diff_low", math.nan), row.get("sharpe_diff_high", math.nan)
    if not (np.isfinite(low) and np.isfinite(high)):
        return "untested"
    return "better" if low > 0 else ("worse" if high < 0 else "no different")


def _forecast_word(row: pd.Series, alpha: float) -> str:
    """How the candidate's accuracy compares with the random walk's, by Diebold-Mariano."""
    u2, p = row.get("theil_u2", math.nan), row.get("dm_p_value", math.nan)
    if not (np.isfinite(u2) and np.isfinite(p)):
        return "untested"
    if p >= alpha:
        return "no different"
    return "better" if u2 < 1 else "worse"


def headline(block: pd.DataFrame, alpha: float, candidate: str, label: str, benchmark: str) -> str:
    """One line on one instrument (or the pooled rows): the candidate's trading against
    ``benchmark`` (the bootstrap interval of the Sharpe difference) and its forecasting
    against the random walk (Diebold-Mariano), each judged by its own test.

    Example: ``LSTM trading: worse than buy_and_hold (Sharpe -0.62 [-1.13, -0.19]);
    forecasting: no different from the random walk (Theil U2 1.000, DM p = 0.61).``
    """
    if candidate not in block.index:
        return f"No {label} forecasts: nothing to judge."
    row = block.loc[candidate]
    trading = _trading_word(row)
    if trading == "untested":
        trade = f"trading: not compared with {benchmark}"
    else:
        versus = "from" if trading == "no different" else "than"
        trade = (
            f"trading: {trading} {versus} {benchmark} (Sharpe {_signed(row['sharpe_diff'])} "
            f"[{fmt(row['sharpe_diff_low'])}, {fmt(row['sharpe_diff_high'])}])"
        )
    forecasting = _forecast_word(row, alpha)
    if forecasting == "untested":
        fore = "forecasting: not compared with the random walk"
    else:
        versus = "from" if forecasting == "no different" else "than"
        fore = (
            f"forecasting: {forecasting} {versus} the random walk (Theil U2 "
            f"{fmt(row['theil_u2'], 3)}, DM p {_p_clause(row['dm_p_value'])})"
        )
    return f"{label} {trade}; {fore}."


def universe_headline(
    league: pd.DataFrame,
    alpha: float,
    candidate: str,
    label: str,
    benchmark: str,
    pooled: str = "pooled",
) -> str:
    """One line across the instruments: on how many the candidate's Sharpe ratio is below
    the benchmark's and its forecasts less accurate than the random walk's, and where
    significantly (e.g. "LSTM loses to buy_and_hold on 3 of 4 instruments, significantly
    on GSPC; ...")."""
    rows = league[(league["strategy"] == candidate) & (league["instrument"] != pooled)]
    if rows.empty:
        return f"No {label} forecasts: nothing to judge."
    rows = rows.set_index("instrument")
    n = len(rows)
    diffs = rows["sharpe_diff"]
    losses = diffs[diffs < 0].index.tolist()
    worse = [i for i in losses if _trading_word(rows.loc[i]) == "worse"]
    better = [i for i in diffs[diffs > 0].index if _trading_word(rows.loc[i]) == "better"]
    if len(losses) * 2 > n:
        trade = f"{label} loses to {benchmark} on {len(losses)} of {n} instruments"
        trade += f", significantly on {_names(worse)}" if worse else ", none significantly"
    else:
        wins = n - len(losses)
        trade = f"{label} matches or beats {benchmark} on {wins} of {n} instruments"
        trade += f", significantly on {_names(better)}" if better else ", none significantly"
        if worse:
            trade += f", and is significantly worse on {_names(worse)}"
    u2 = rows["theil_u2"]
    more = u2[u2 < 1].index.tolist()
    sig = [i for i in more if _forecast_word(rows.loc[i], alpha) == "better"]
    less = [i for i in u2.index if _forecast_word(rows.loc[i], alpha) == "worse"]
    fore = f"its forecasts beat the random walk's on {len(more)} of {n}"
    fore += f", significantly on {_names(sig)}" if sig else ", none significantly"
    if less:
        fore += f", and are significantly worse on {_names(less)}"
    return f"{trade}; {fore}."


def _names(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _p_clause(p: float) -> str:
    text = pvalue(p)
    return text.replace("<", "< ") if text.startswith("<") else f"= {text}"


def pvalue(p: float) -> str:
    """A p-value as the page shows it: "<0.001" below 0.001, else three decimals."""
    if not np.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def print_verdict(path: Path) -> None:
    """The headlines of a report's ``verdict.json`` and the report's path: how the report
    stage, and ``run`` after its timing table, end."""
    verdicts = json.loads((path / VERDICT_FILE).read_text())
    print("\nVerdict:")
    for key, entry in verdicts.items():
        for line in entry["headlines"]:
            print(f"  {key}: {line}")
    print(f"report: {shown(path / 'index.html')}")
