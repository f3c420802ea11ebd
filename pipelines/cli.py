"""Shared command-line plumbing for the stages: arguments, logging, clean errors."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import traceback
from collections.abc import Callable

from pipelines.common.errors import GatecastError
from pipelines.config import Config, load_config, parse_set

log = logging.getLogger("gatecast")


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m pipelines {stage}", description=description)
    parser.add_argument(
        "--config", default="configs/default.yaml", help="experiment YAML (default: %(default)s)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set forecasters.lstm.epochs=5 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # the command a stage records in MLflow when another command runs it (`run` passes its own)
    parser.add_argument("--command", default=None, help=argparse.SUPPRESS)
    return parser


def recorded_command(args: argparse.Namespace, stage: str) -> str:
    """The command line a stage's MLflow runs record: the one that ran.

    ``python -m pipelines <stage> ...`` rebuilt from the parsed arguments when the stage
    is the command, or the command that ran it (``--command``, set by
    ``python -m pipelines run``).
    """
    if args.command:
        return args.command
    words = ["python", "-m", "pipelines", stage, "--config", args.config]
    for item in args.set:
        words += ["--set", item]
    return shlex.join(words + (["-v"] if args.verbose else []))


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # run_stage reads it: -v also means full tracebacks
    log.setLevel(logging.DEBUG if verbose else logging.NOTSET)


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, overrides=parse_set(args.set) if args.set else None)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _notes(err: BaseException) -> list[str]:
    # PEP 678 notes, e.g. the MLflow runs a failure ended (pipelines.tracking adds one)
    return [_one_line(n) for n in getattr(err, "__notes__", ()) if str(n).strip()]


def _stage_of(body: Callable[[], int]) -> str:
    module = getattr(body, "__module__", None) or "stage"
    return module.rsplit(".", 1)[-1]


def run_stage(
    body: Callable[[], int], stage: str | None = None, *, verbose: bool | None = None
) -> int:
    """Run a stage body; whatever stops it becomes one clear line on stderr and an exit code.

    - ``GatecastError`` (bad data or config): ``error: <message>``, exit 2;
    - any other exception: ``error: <stage> failed: <Type>: <message> (-v shows
      the traceback)``, exit 1; with ``-v`` the traceback comes first instead;
    - Ctrl-C (``KeyboardInterrupt``): ``interrupted: <stage> stopped``, exit 130.

    Notes attached to the exception (PEP 678), such as the MLflow runs it
    ended, go in the same line.

    Args:
        body: The stage's work; returns the exit code.
        stage: The stage's name for the message; by default the last part of
            the module that defines ``body`` (``pipelines.stages.train`` -> ``train``).
        verbose: Print tracebacks; by default whether ``setup_logging(True)`` ran.
    """
    stage = stage or _stage_of(body)
    if verbose is None:
        verbose = log.isEnabledFor(logging.DEBUG)
    try:
        return body()
    except GatecastError as err:
        extra = _notes(err)
        print(f"error: {err}" + (f" ({'; '.join(extra)})" if extra else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        why = [_one_line(str(err))] if str(err).strip() else []
        extra = why + _notes(err)
        print(
            f"interrupted: {stage} stopped" + (f" ({'; '.join(extra)})" if extra else ""),
            file=sys.stderr,
        )
        return 130
    except Exception as err:
        if verbose:
            traceback.print_exc()
        cause = _one_line(str(err)) or "(no message)"
        extra = [*_notes(err)] if verbose else [*_notes(err), "-v shows the traceback"]
        print(
            f"error: {stage} failed: {type(err).__name__}: {cause}"
            + (f" ({'; '.join(extra)})" if extra else ""),
            file=sys.stderr,
        )
        return 1
