"""Stage ``report``: the comparison, its statistics and the HTML report.

Only reads what the earlier stages wrote under ``<output_directory>/<name>/``
(``forecasts/`` from train, ``backtests/`` from backtest, cost sweep included;
see docs/architecture.md); it runs no backtest. Writes
``<report.directory>/<name>/``:

- ``index.html``: one self-contained page (interactive Bokeh charts, Bokeh's
  JavaScript inlined once; no script, font, stylesheet or image from the
  network; see ``pipelines.report.html``);
- ``*.png``: a matplotlib twin of each chart, linked from the page;
- ``league.csv`` and ``league.json``: the league table (one row per
  instrument x strategy, plus the pooled rows), ``cost_sweep.csv``,
  ``seeds.csv``.

The directory is built in a temporary sibling and renamed into place, so a
failure leaves the previous report (or none), never half of one. The report
is logged to MLflow as a ``report`` run carrying the report as artifacts and
the league table as metrics, ``<INST>/<strategy>/<metric>`` (and
``pooled/<strategy>/<metric>``); each strategy's own run, with its equity
curve, trades, cost sweep and charts, is the backtest stage's
(``backtest/<INST>/<strategy>``).

The work is split by job: ``pipelines.report.inputs`` reads the stage files,
``pipelines.report.comparison`` builds the league and its statistics (the
definitions of pooled rows, trials, Sharpe difference and break-even cost are
in its docstring), ``pipelines.report.verdict`` writes the sentences,
``pipelines.report.html`` and ``pipelines.report.tables`` the outputs,
``pipelines.report.multiple`` the multiple-testing section (SPA / StepM,
Holm / BH, IC, the top-k portfolio; also ``multiple_testing.csv`` and, where
they apply, ``across_instruments.csv``, ``cross_section.csv``,
``portfolio.csv``); this
module runs them in order and records the run.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import tracking
from pipelines.cli import (
    config_from_args,
    recorded_command,
    run_stage,
    setup_logging,
    stage_parser,
)
from pipelines.common.errors import GatecastError
from pipelines.common.outputs import write_json
from pipelines.config import Config
from pipelines.report import multiple as report_multiple
from pipelines.report.comparison import METRIC_COLUMNS, POOLED, Comparison, compare, finite
from pipelines.report.html import headlines, render_html
from pipelines.report.inputs import (
    InstrumentData,
    bars_per_year,
    check_seeds,
    load_cost_sweep,
    load_instruments,
)
from pipelines.report.tables import console_table, write_tables
from pipelines.report.tearsheet import load_trade_logs
from pipelines.report.verdict import VERDICT_FILE, print_verdict, verdict

__all__ = ["METRIC_COLUMNS", "ReportResult", "main", "publish", "report"]

log = logging.getLogger("gatecast.report")

STAGE = "report"


@dataclass
class ReportResult:
    """What the report stage produced.

    Args:
        comparison: the numbers.
        index: path of ``index.html``.
        run_id: the MLflow ``report`` run.
        experiment: the MLflow experiment name.
        tracking_uri: where MLflow keeps it.
        verdicts: instrument (or ``pooled``) -> the verdict's sentences (the pooled
            one ends with the multiple-testing sentences).
        multiple: the corrected tests, IC and portfolio (``pipelines.report.multiple``).
        headlines: instrument (or ``pooled``) -> its one-line verdicts (``html.headlines``).
    """

    comparison: Comparison
    index: Path
    run_id: str
    experiment: str
    tracking_uri: str
    verdicts: dict[str, list[str]] = field(default_factory=dict)
    multiple: report_multiple.MultipleTesting | None = None
    headlines: dict[str, list[str]] = field(default_factory=dict)


def publish(build: Path, target: Path) -> None:
    """Replace ``target`` by the finished directory ``build`` (old report removed last)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(build, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _log_league(comparison: Comparison) -> None:
    """Every row of the league table as metrics of the report run, ``<INST>/<strategy>/<m>``.

    The strategies' own runs are the backtest stage's; logged before the
    charts are drawn, so a failed render still leaves them.
    """
    for row in comparison.league.to_dict(orient="records"):
        prefix = f"{row['instrument']}/{row['strategy']}"
        tracking.log_metrics(
            {f"{prefix}/{k}": row[k] for k in METRIC_COLUMNS if finite(row.get(k))}
        )


def _write_report(
    cfg: Config,
    comparison: Comparison,
    instruments: Sequence[InstrumentData],
    config_path: str,
    multiple: report_multiple.MultipleTesting,
    verdicts: Mapping[str, Any],
) -> Path:
    """Render into a temporary sibling of the report directory, then publish it."""
    target = cfg.report_directory
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    build.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        fragment = report_multiple.render(multiple)
        trades = load_trade_logs(cfg, [inst.name for inst in instruments])
        index = render_html(
            cfg,
            comparison,
            instruments,
            build,
            config_path=config_path,
            trades=trades,
            multiple_html=fragment,
            corrected=report_multiple.verdict_sentences(multiple),
        )
        write_tables(comparison, build)
        report_multiple.write_tables(multiple, build)
        write_json(build / VERDICT_FILE, verdicts)
        publish(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return target / index.name


def report(cfg: Config, *, config_path: str = "", command: str | None = None) -> ReportResult:
    """Run the report stage: read the stage outputs, compare, write the report, log to MLflow."""
    started = time.perf_counter()
    instruments = load_instruments(cfg)
    inputs = {
        "forecasts.summary.json": cfg.stage_directory("train") / "summary.json",
        "backtests.summary.json": cfg.stage_directory("backtest") / "summary.json",
    }
    inputs = {label: path for label, path in inputs.items() if path.is_file()}
    timings: dict[str, float] = {}

    phases = ("inputs", "statistics", "multiple_testing", "mlflow", "render")

    def lap(name: str, since: float) -> float:
        # one line per phase, so the stage is never silent for long
        now = time.perf_counter()
        timings[name] = now - since
        k = phases.index(name) + 1
        nxt = f"; next: {phases[k].replace('_', ' ')}" if k < len(phases) else ""
        log.info("report %d/%d: %s done in %.1f s%s", k, len(phases), name, timings[name], nxt)
        return now

    with tracking.pipeline_run(cfg, STAGE, inputs=inputs, command=command) as run:
        t = time.perf_counter()
        check_seeds(instruments)
        sweep = load_cost_sweep(cfg, instruments)
        t = lap("inputs", t)
        per_year, interval = bars_per_year(cfg)
        comparison = compare(cfg, instruments, sweep, per_year, interval)
        t = lap("statistics", t)
        multiple = report_multiple.analyse(cfg, instruments, comparison)
        t = lap("multiple_testing", t)
        _log_league(comparison)
        t = lap("mlflow", t)
        verdicts = _verdicts(cfg, comparison, multiple)
        index = _write_report(cfg, comparison, instruments, config_path, multiple, verdicts)
        t = lap("render", t)
        tracking.log_artifact(cfg.report_directory, "report")
        log.info("report phases: %s", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
        tracking.log_metrics(
            {
                "n_trials": comparison.n_trials,
                **report_multiple.tracked_metrics(multiple),
                "wall_seconds": time.perf_counter() - started,
                **{f"seconds/{k}": v for k, v in timings.items()},
            }
        )
    return ReportResult(
        comparison,
        index,
        run.run_id,
        cfg.experiment_name,
        run.tracking_uri,
        {key: v["sentences"] for key, v in verdicts.items()},
        multiple,
        {key: v["headlines"] for key, v in verdicts.items()},
    )


def _verdicts(
    cfg: Config, comparison: Comparison, multiple: report_multiple.MultipleTesting
) -> dict[str, dict[str, Any]]:
    """Instrument (or ``pooled``) -> its ``headlines``, ``outcome`` and ``sentences`` (the
    pooled ones end with the multiple-testing sentences): ``verdict.json`` of the report."""
    out = {}
    for key in dict.fromkeys(comparison.league["instrument"]):
        block = comparison.league[comparison.league["instrument"] == key].set_index("strategy")
        sentences, outcome = verdict(
            block,
            cfg.report.significance,
            comparison.n_trials,
            cfg.report.candidate,
            cfg.candidate_label,
            cfg.report.benchmark,
        )
        if key == POOLED:
            sentences = [*sentences, *report_multiple.verdict_sentences(multiple)]
        out[key] = {
            "headlines": headlines(cfg, comparison.league, block, key),
            "outcome": outcome,
            "sentences": sentences,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(
        STAGE, "League table, statistics (PSR, DSR, bootstrap, cost sweep) and the HTML report."
    )
    parser.add_argument(
        "--no-verdict",
        action="store_true",
        help="end without the verdict's headlines and the report's path (run prints them "
        "after its timing table)",
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        cfg = config_from_args(args)
        try:
            result = report(cfg, config_path=args.config, command=recorded_command(args, STAGE))
        except (GatecastError, KeyboardInterrupt):
            raise
        except Exception as err:
            if args.verbose:
                traceback.print_exc()
            cause = " ".join(str(err).split()) or "(no message)"
            print(
                f"error: report failed: {type(err).__name__}: {cause} (the previous report, if "
                "any, is left as it was; -v shows the traceback)",
                file=sys.stderr,
            )
            return 1
        league = result.comparison.league
        print(
            console_table(
                league,
                max_rows_per_instrument=3,
                candidate=cfg.report.candidate,
                benchmark=cfg.report.benchmark,
            )
        )
        print(
            f"MLflow: experiment {result.experiment}, run {result.run_id} at "
            f"{result.tracking_uri} (browse: make ui)"
        )
        if not args.no_verdict:
            print_verdict(result.index.parent)
        return 0

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
