"""The code each stage runs, derived from its imports: the Makefile's prerequisites.

``python -m pipelines.stages.depends`` prints one make variable per stage, for
example ``TRAIN_CODE := core/__init__.py ... pipelines/stages/train.py``: the files
of every project module that the stage's module imports, directly or through
other project modules, with their packages' ``__init__.py``. The Makefile
includes that output, so a change to any module a stage runs redoes that
stage (and, through the stage files, the ones after it), and a new module is
picked up without anyone editing a list.

The import graph is read from the source, without importing anything
(``pipelines.common.code``), so make can run this before the virtual
environment exists.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from pipelines.common.code import ROOT, code_files
from pipelines.stages import COMMANDS, PIPELINE

# make variable -> the stage's module: DATA_CODE -> pipelines.stages.data, ...
STAGES = {f"{name.upper()}_CODE": COMMANDS[name][0] for name in PIPELINE}


def make_variables(stages: dict[str, str] = STAGES, root: Path = ROOT) -> Iterable[str]:
    """``NAME := file ...`` for each stage, paths relative to ``root``."""
    for variable, module in stages.items():
        files = " ".join(str(p.relative_to(root)) for p in code_files(module, root))
        yield f"{variable} := {files}"


def main(argv: list[str] | None = None) -> int:
    del argv  # no options: the output depends on the source tree only
    print("# written by `python -m pipelines.stages.depends`; do not edit")
    for line in make_variables():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
