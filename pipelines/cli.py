"""Shared command-line plumbing for the stages: arguments, logging, clean errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from pipelines.config import Config, load_config, parse_set
from pipelines.errors import GatecastError

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
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, overrides=parse_set(args.set) if args.set else None)


def run_stage(body: Callable[[], int]) -> int:
    """Run a stage body; a GatecastError becomes one clear line and exit code 2."""
    try:
        return body()
    except GatecastError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
