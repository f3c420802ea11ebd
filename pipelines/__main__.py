"""``gatecast <stage> --config FILE`` (or ``python -m pipelines <stage> ...``): every stage."""

from __future__ import annotations

import argparse
import importlib
import sys

from pipelines.stages import COMMANDS

STAGES = COMMANDS  # the registry: pipelines.stages


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="gatecast",
        description="gatecast: a hand-built LSTM against classic forecasters, tested honestly.",
    )
    parser.add_argument("stage", choices=sorted(STAGES), help="stage to run")
    parser.epilog = "stages:\n" + "\n".join(f"  {k:9} {v[1]}" for k, v in STAGES.items())
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    if not argv or argv[0] in {"-h", "--help"}:
        parser.print_help()
        return 0 if argv else 2
    args, rest = parser.parse_known_args(argv[:1])
    module = importlib.import_module(STAGES[args.stage][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
