"""The Makefile's stages and the code each runs, derived from the stage list and the imports.

``python -m pipelines.stages.depends`` prints make variables: the stages in order
(``STAGES``, from ``pipelines.common.stages.PIPELINE``), each stage's file
(``STAGE_FILE.<stage>``: its folder's ``summary.json``, the report's page), the
stage before it (``STAGE_BEFORE.<stage>``), its one-line help, and its code, for
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
from pipelines.common.stages import FOLDERS
from pipelines.stages import COMMANDS, PIPELINE

# make variable -> the stage's module: DATA_CODE -> pipelines.stages.data, ...
STAGES = {f"{name.upper()}_CODE": COMMANDS[name][0] for name in PIPELINE}


def make_variables(stages: dict[str, str] = STAGES, root: Path = ROOT) -> Iterable[str]:
    """``NAME := file ...`` for each stage, paths relative to ``root``."""
    for variable, module in stages.items():
        files = " ".join(str(p.relative_to(root)) for p in code_files(module, root))
        yield f"{variable} := {files}"


def stage_variables() -> Iterable[str]:
    """The stage list as make variables (the Makefile's stage rules are made from them)."""
    yield f"STAGES := {' '.join(PIPELINE)}"
    for before, stage in zip((None, *PIPELINE), PIPELINE, strict=False):
        folder = FOLDERS.get(stage)
        yield f"STAGE_FILE.{stage} := " + (
            f"$(BUILD)/{folder}/summary.json" if folder else "$(REPORT)"
        )
        if before is not None:
            yield f"STAGE_BEFORE.{stage} := {before}"
        yield f"STAGE_CODE.{stage} := {stage.upper()}_CODE"
        yield f"STAGE_HELP.{stage} := {COMMANDS[stage][1]}"


def main(argv: list[str] | None = None) -> int:
    del argv  # no options: the output depends on the source tree only
    print("# written by `python -m pipelines.stages.depends`; do not edit")
    for line in (*stage_variables(), *make_variables()):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
