"""The Makefile's prerequisites are derived from the imports (pipelines.stages.depends)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.stages import depends

REPO_ROOT = Path(__file__).resolve().parent.parent


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_every_kind_of_import_is_followed_and_nothing_else(tmp_path: Path):
    _write(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/bars.py": "import numpy\n",
            "models/__init__.py": "",
            "models/a.py": "from . import b\nfrom .c import thing\n",
            "models/b.py": "def f():\n    import core.bars  # lazy\n",
            "models/c.py": "from models.sub.d import x\nthing = 1\n",
            "models/sub/__init__.py": "",
            "models/sub/d.py": "x = 1\n",
            "models/unused.py": "import models.a\n",
            "pipelines/__init__.py": "",
            "pipelines/stage.py": "from models import a\nimport strategies.nothing_here\n",
        },
    )
    found = [str(p.relative_to(tmp_path)) for p in depends.code_files("pipelines.stage", tmp_path)]
    assert found == [
        "core/__init__.py",
        "core/bars.py",
        "models/__init__.py",
        "models/a.py",
        "models/b.py",
        "models/c.py",
        "models/sub/__init__.py",
        "models/sub/d.py",
        "pipelines/__init__.py",
        "pipelines/stage.py",
    ]


def test_the_stages_code_follows_what_they_import():
    code = {
        name: {str(p.relative_to(REPO_ROOT)) for p in depends.code_files(module)}
        for name, module in depends.STAGES.items()
    }
    assert {"pipelines/stages/train.py", "models/gate_lstm.py", "models/lstm.py"} <= code[
        "TRAIN_CODE"
    ]
    assert {
        "pipelines/stages/search.py",
        "pipelines/execution/search_unit.py",
        "models/lstm.py",
    } <= code["SEARCH_CODE"]
    assert "pipelines/stages/train.py" not in code["SEARCH_CODE"]  # a train change redoes no search
    assert (
        "pipelines/stages/search.py" in code["TRAIN_CODE"]
    )  # train reads the chosen configuration
    assert "strategies/engine.py" in code["BACKTEST_CODE"]
    assert "pipelines/stages/report.py" in code["REPORT_CODE"]
    assert not any(path.startswith(("models/", "strategies/")) for path in code["DATA_CODE"])
    assert "pipelines/stages/report.py" not in code["TRAIN_CODE"] | code["BACKTEST_CODE"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_reads_the_derived_prerequisites(tmp_path: Path):
    target = tmp_path / "forecasts" / "summary.json"
    # What every make run does first: bring the derived list up to date (make -q alone
    # remakes it but keeps the prerequisites it read before).
    subprocess.run(
        ["make", "--no-print-directory", "build/.stage-code.mk"], cwd=REPO_ROOT, check=True
    )
    done = subprocess.run(
        ["make", "--no-print-directory", "-p", "-q", str(target), f"BUILD={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    rule = next(line for line in done.stdout.splitlines() if line.startswith(f"{target}:"))
    prerequisites = set(rule.split(":", 1)[1].split())
    expected = {str(p.relative_to(REPO_ROOT)) for p in depends.code_files("pipelines.stages.train")}
    assert expected <= prerequisites
    assert "pipelines/stages/report.py" not in prerequisites


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_search_stage_has_its_own_target_between_data_and_train(tmp_path: Path):
    subprocess.run(
        ["make", "--no-print-directory", "build/.stage-code.mk"], cwd=REPO_ROOT, check=True
    )
    done = subprocess.run(
        ["make", "--no-print-directory", "-p", "-q", "search", f"BUILD={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    rules = {
        line.split(":", 1)[0]: set(line.split(":", 1)[1].split())
        for line in done.stdout.splitlines()
        if line.startswith(str(tmp_path)) and ":" in line and not line.startswith("#")
    }
    search, train = tmp_path / "search" / "summary.json", tmp_path / "forecasts" / "summary.json"
    expected = {
        str(p.relative_to(REPO_ROOT)) for p in depends.code_files("pipelines.stages.search")
    }
    assert expected | {str(tmp_path / "data" / "summary.json")} <= rules[str(search)]
    assert str(search) in rules[str(train)]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_makefiles_stages_are_the_one_list(tmp_path: Path):
    from pipelines.common.stages import FOLDERS, PIPELINE

    subprocess.run(
        ["make", "--no-print-directory", "build/.stage-code.mk"], cwd=REPO_ROOT, check=True
    )
    done = subprocess.run(
        ["make", "--no-print-directory", "-p", "-q", "data", f"BUILD={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    variables = dict(line.split(" := ", 1) for line in done.stdout.splitlines() if " := " in line)
    assert variables["STAGES"].split() == list(PIPELINE)
    for stage, folder in FOLDERS.items():  # each stage's rule makes its folder's summary
        target = f"{tmp_path}/{folder}/summary.json"
        assert any(line.startswith(f"{target}:") for line in done.stdout.splitlines()), stage
