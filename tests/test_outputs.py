"""Stage outputs: atomic writes and the summary reader's errors."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pipelines.errors import DataError
from pipelines.outputs import atomic_write, read_stage_summary


def test_atomic_write_leaves_no_half_written_file(tmp_path):
    target = tmp_path / "out" / "X.parquet"

    def fail_midway(tmp: Path) -> None:
        tmp.write_bytes(b"PAR1 half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail_midway)
    assert list((tmp_path / "out").iterdir()) == []


def test_atomic_write_keeps_the_old_file_on_failure_and_replaces_it_on_success(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_text() == "old"

    atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_missing_summary_names_the_stage_to_run(tmp_path):
    path = tmp_path / "summary.json"
    with pytest.raises(DataError) as err:
        read_stage_summary(path, "train")
    assert str(err.value) == (
        f"{path} not found: run `python -m pipelines train --config ...` first "
        "(or `python -m pipelines run` for every stage)"
    )


def test_corrupt_summary_says_to_rerun_the_stage(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"not valid JSON .*; rerun the backtest stage$"):
        read_stage_summary(path, "backtest")


def test_summary_without_instruments_is_refused(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"GSPC": {}}))
    with pytest.raises(DataError) as err:
        read_stage_summary(path, "train")
    assert str(err.value) == f"{path}: expected an 'instruments' mapping; rerun the train stage"


def test_summary_is_returned_as_written(tmp_path):
    path = tmp_path / "summary.json"
    payload = {"instruments": {"GSPC": {"oos_start": "2015-01-02"}}, "experiment": "x"}
    path.write_text(json.dumps(payload))
    assert read_stage_summary(path, "train") == payload
