"""The layering is checked by a tool: import-linter's contracts in pyproject.toml.

``pipelines -> strategies | models -> core``; models and strategies never import
each other or pipelines; only the tracking code imports mlflow; models never
import Backtrader and strategies never Keras; no import cycles inside a package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "models", "strategies", "pipelines")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_project_keeps_every_contract():
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"Contracts: \d+ kept, 0 broken", done.stdout), done.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and pyproject.toml, to break a contract in."""
    for name in PACKAGES:
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("models/leak.py", "import strategies.engine", "never import each other"),
        ("strategies/leak.py", "import pipelines.config", "pipelines -> strategies"),
        ("core/leak.py", "import models.base", "pipelines -> strategies"),
        ("models/leak.py", "import mlflow", "only the tracking package imports mlflow"),
        ("pipelines/leak.py", "import mlflow", "only the tracking package imports mlflow"),
        ("models/leak.py", "import backtrader", "models never import Backtrader"),
        ("strategies/leak.py", "import keras", "strategies never import Keras"),
        ("pipelines/common/outputs.py", "import pipelines.stages.train", "no import cycles"),
    ],
)
def test_a_broken_layer_is_caught(tree: Path, module: str, line: str, contract: str):
    path = tree / module
    path.write_text((path.read_text() if path.exists() else "") + f"\n{line}\n")
    done = lint_imports(tree)
    assert done.returncode != 0
    broken = " ".join(done.stdout.split("Broken contracts")[-1].split())  # unwrap lines
    assert contract in broken, done.stdout
