"""The child-process scripts of ``make bench`` resolve every name they use.

The benchmarks run these scripts only under ``make bench``, so a renamed module would
otherwise go unnoticed until someone measures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks._mlflow_import import ALL_STAGE_MODULES, driver_head

REPO = Path(__file__).resolve().parent.parent


def test_the_drivers_import_the_tracking_timer_and_their_stage():
    for entry in ("pipelines.stages.run", "pipelines.stages.train"):
        code = driver_head(ALL_STAGE_MODULES, entry) + (
            "overhead.reset_overhead()\n"
            "assert callable(overhead.overhead_by_call) and callable(overhead.mlflow_seconds)\n"
            "assert hasattr(stage, 'main') and t0 <= t1 <= t2\n"
            "print('ok')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
