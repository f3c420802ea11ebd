"""`make all`: the first stage whose file is out of date, and the ones after it, in one process.

make runs with a stand-in for the project's Python that only records its
arguments, and with the build and report paths in a temporary folder, so
the test checks make's decisions without running the pipeline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = "configs/smoke.yaml"
# What the stages read (the Makefile's INPUTS.<stage> and the code of every package);
# the stage files must be newer.
INPUT_GLOBS = [
    "pyproject.toml",
    "configs/*.yaml",
    "data/sample/*.csv",
    "pipelines/**/*.py",
    "pipelines/report/templates/*",
    "models/**/*.py",
    "core/**/*.py",
    "strategies/**/*.py",
]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


class Job:
    """The paths of one `make all` and how to run it."""

    def __init__(self, root: Path) -> None:
        self.log = root / "python-calls.txt"
        self.python = root / "python"
        self.python.write_text(f'#!/bin/sh\necho "$*" >> "{self.log}"\n')
        self.python.chmod(0o755)
        build = root / "build"
        self.files = {
            "stamp": root / "installed",
            "data": build / "data" / "summary.json",
            "search": build / "search" / "summary.json",
            "train": build / "forecasts" / "summary.json",
            "backtest": build / "backtests" / "summary.json",
            "report": root / "reports" / "index.html",
        }
        self.variables = [
            f"CONFIG={CONFIG}",
            f"PY={self.python}",
            f"STAMP={self.files['stamp']}",
            f"BUILD={build}",
            f"REPORT={self.files['report']}",
        ]
        newest_input = max(
            p.stat().st_mtime for pattern in INPUT_GLOBS for p in REPO_ROOT.glob(pattern)
        )
        for k, path in enumerate(self.files.values()):  # each newer than what it reads
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
            self.age(path, newest_input + 1 + k)

    @staticmethod
    def age(path: Path, mtime: float) -> None:
        os.utime(path, (mtime, mtime))

    def all(self, *flags: str) -> tuple[str, list[str]]:
        self.log.unlink(missing_ok=True)
        done = subprocess.run(
            ["make", "--no-print-directory", *flags, "all", *self.variables],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        calls = self.log.read_text().splitlines() if self.log.exists() else []
        return done.stdout, calls


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path)


def test_nothing_to_redo_starts_no_python(job: Job):
    out, calls = job.all()
    assert calls == []
    assert "up to date" in out


@pytest.mark.parametrize("stale", ["data", "search", "train", "backtest", "report"])
def test_the_first_stale_stage_and_those_after_it_run_in_one_process(job: Job, stale: str):
    order = ["data", "search", "train", "backtest", "report"]
    if stale == "data":
        job.files["data"].unlink()
    else:  # older than the stage before it, as after that stage was redone
        before = job.files[order[order.index(stale) - 1]]
        job.age(job.files[stale], before.stat().st_mtime - 1)
    _, calls = job.all()
    assert calls == [f"-m pipelines run --config {CONFIG} --from {stale}"]


def test_a_dry_run_runs_nothing(job: Job):
    job.files["data"].unlink()
    out, calls = job.all("-n")
    assert calls == []
    assert "pipelines run" in out  # shown, not run
