"""Stage files: safe names, shown paths, atomic writes (JSON, Parquet), summaries read back."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.common.errors import DataError
from pipelines.common.outputs import (
    atomic_write,
    read_stage_parquet,
    read_stage_summary,
    safe_child,
    shown,
    write_json,
    write_parquet,
)
from pipelines.config import REPO_ROOT


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


def test_shown_is_relative_to_the_repository_when_inside_it(tmp_path):
    assert shown(REPO_ROOT / "data" / "sample" / "GSPC.csv") == "data/sample/GSPC.csv"
    assert shown(tmp_path / "x.csv") == str(tmp_path / "x.csv")
    assert shown(REPO_ROOT / "build" / ".." / "configs") == "configs"


def test_safe_child_joins_a_plain_name_and_refuses_a_path(tmp_path):
    assert safe_child(tmp_path, "BRK.B", ".csv") == tmp_path / "BRK.B.csv"
    with pytest.raises(DataError, match=r"^'\.\./x' is not a plain instrument or dataset name"):
        safe_child(tmp_path, "../x", ".csv")


def test_write_json_is_atomic_indented_and_refuses_nan(tmp_path):
    path = tmp_path / "out" / "summary.json"
    write_json(path, {"a": [1, 2.5], "b": "x"})
    assert path.read_text() == json.dumps({"a": [1, 2.5], "b": "x"}, indent=2) + "\n"
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": [1, 2.5], "b": "x"}  # the old file stays
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_write_parquet_round_trips_the_frame_and_its_index(tmp_path):
    frame = pd.DataFrame(
        {"close": np.array([1.5, 2.5]), "volume": np.array([0.0, 3.0])},
        index=pd.DatetimeIndex(["2020-01-02", "2020-01-03"], name="date"),
    )
    path = tmp_path / "X.parquet"
    write_parquet(path, frame)
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_a_damaged_parquet_names_the_file_and_the_stage_to_rerun(tmp_path, damage):
    path = tmp_path / "GSPC.parquet"
    pd.DataFrame({"close": np.arange(100.0)}).to_parquet(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"PAR1" + b"\x00" * 64)
    else:
        path.unlink()
    with pytest.raises(DataError) as err:
        read_stage_parquet(path, "data")
    message = str(err.value)
    assert message.startswith(f"{path}: not a readable Parquet file (")
    assert message.endswith(
        "it is written by the data stage: rerun it (`python -m pipelines data --config ...`, "
        "or `make data`)"
    )
    assert len(message) < 500


def test_a_sound_parquet_reads_back(tmp_path):
    frame = pd.DataFrame({"close": np.arange(3.0)})
    frame.to_parquet(tmp_path / "x.parquet")
    pd.testing.assert_frame_equal(read_stage_parquet(tmp_path / "x.parquet", "data"), frame)
