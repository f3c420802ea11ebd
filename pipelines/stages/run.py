"""Stage ``run``: the whole job in one process: data, search, train, backtest, report.

``--from STAGE`` starts later, on the saved outputs of the stages before it:
``make all`` runs ``python -m pipelines run --from <the first stage whose
inputs changed>``, so the stages it redoes share one process (one import of
TensorFlow and MLflow) instead of starting one each.

Each stage's own ``main`` is called in order with the same ``--config`` and
``--set`` arguments, exactly as ``python -m pipelines <stage>`` would run it;
the first stage that fails stops the job with its exit code. At the end the
console shows how long each stage took (and MLflow's share), the report's
compact league table, and where the report and the MLflow experiment are
(a link that opens the experiment's runs in the UI's model-training view).
"""

from __future__ import annotations

import importlib
import logging
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.cli import config_from_args, run_stage, setup_logging, stage_parser
from pipelines.report.verdict import print_verdict
from pipelines.stages import COMMANDS, PIPELINE
from pipelines.tracking import overhead
from pipelines.tracking import store as tracking_store
from pipelines.tracking import uri as store_uri

log = logging.getLogger("gatecast.run")

STAGES = PIPELINE


@dataclass
class StageTiming:
    """Wall time of one stage and the part of it spent in MLflow calls.

    Args:
        stage: the stage name.
        seconds: wall time of its ``main``.
        mlflow_seconds: time inside ``pipelines.tracking`` calls during it, in every
            thread (the driver may record in a background thread beside the units).
        status: the stage's exit code.
        mlflow_main_seconds: the part of it in the main thread, the stage's critical path.
    """

    stage: str
    seconds: float
    mlflow_seconds: float
    status: int
    mlflow_main_seconds: float = 0.0


@dataclass
class PipelineTiming:
    """Timings of one ``run``: per stage, in order, plus the total."""

    stages: list[StageTiming] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def mlflow_seconds(self) -> float:
        return sum(s.mlflow_seconds for s in self.stages)

    @property
    def status(self) -> int:
        return next((s.status for s in self.stages if s.status), 0)

    def table(self) -> str:
        lines = [f"{'stage':<9} {'seconds':>8} {'mlflow':>7}"]
        for s in self.stages:
            lines.append(f"{s.stage:<9} {s.seconds:8.1f} {s.mlflow_seconds:7.2f}")
        share = 100 * self.mlflow_seconds / self.seconds if self.seconds else 0.0
        lines.append(f"{'total':<9} {self.seconds:8.1f} {self.mlflow_seconds:7.2f}  ({share:.1f}%)")
        return "\n".join(lines)


def _overhead(main_only: bool = False) -> float:
    # Only once the train or report stage has imported tracking.
    tracking = sys.modules.get("pipelines.tracking")
    return overhead.mlflow_seconds(main_only) if tracking else 0.0


def run_stages(
    stage_argv: Sequence[str],
    stages: Sequence[str] = STAGES,
    on_stage: Callable[[int, str], Any] | None = None,
    extra: Mapping[str, Sequence[str]] | None = None,
) -> PipelineTiming:
    """Call each stage's ``main(stage_argv)`` in order; stop at the first failure.

    Args:
        stage_argv: arguments every stage gets (``--config``, ``--set``, ``-v``).
        stages: the stages to run, in order.
        on_stage: called with (position, stage) before each stage starts.
        extra: stage -> arguments only that stage gets.
    """
    timing = PipelineTiming()
    for k, stage in enumerate(stages):
        if on_stage is not None:
            on_stage(k, stage)
        module = importlib.import_module(COMMANDS[stage][0])
        before, before_main, started = _overhead(), _overhead(True), time.perf_counter()
        status = module.main([*stage_argv, *(extra or {}).get(stage, ())])
        timing.stages.append(
            StageTiming(
                stage,
                time.perf_counter() - started,
                _overhead() - before,
                int(status or 0),
                _overhead(True) - before_main,
            )
        )
        if status:
            break
    return timing


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = stage_parser(
        "run", "The whole job: load the data, train every forecaster, backtest, report."
    )
    parser.add_argument(
        "--from",
        dest="first",
        choices=STAGES,
        default=STAGES[0],
        help="start at this stage, reusing the saved outputs of the ones before it "
        "(make all passes the first stage whose inputs changed; default: %(default)s)",
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    stages = STAGES[STAGES.index(args.first) :]

    def body() -> int:
        cfg = config_from_args(args)  # fail on a bad config before any stage starts
        stage_argv = ["--config", args.config]
        for item in args.set:
            stage_argv += ["--set", item]
        if args.verbose:
            stage_argv.append("-v")
        # every stage's runs record this command, the one that ran them
        ran = ["python", "-m", "pipelines", "run", *argv]
        stage_argv += ["--command", shlex.join(ran)]

        def banner(k: int, stage: str) -> None:
            print(f"\n== [{k + 1}/{len(stages)}] {stage} ==", file=sys.stderr, flush=True)

        # the report's verdict and path end the output, after the timing table
        timing = run_stages(stage_argv, stages, on_stage=banner, extra={"report": ["--no-verdict"]})
        print("\n" + timing.table())
        if timing.status:
            failed = timing.stages[-1].stage
            print(f"error: the {failed} stage failed (exit code {timing.status})", file=sys.stderr)
            return timing.status

        print(f"MLflow:  experiment {cfg.experiment_name} at {store_uri.display_uri()}")
        experiment = tracking_store.client().get_experiment_by_name(cfg.experiment_name)
        if experiment is not None:  # its runs, in the UI's model-training view
            print(f"         {store_uri.experiment_url(experiment.experiment_id)} (make ui)")
        print_verdict(cfg.report_directory)
        return 0

    return run_stage(body)


if __name__ == "__main__":
    sys.exit(main())
