"""README.md's Python blocks run as written, in a copy of the project, with no env variable.

One tiny train run (the smoke config on GSPC, its model registered under the
README's name) fills the copy's own store, ``<copy>/mlruns``, as ``make all``
would; every `````python`` block of the README then runs from the copy's root
in a fresh process without ``MLFLOW_TRACKING_URI``, and must leave no stray
``mlflow.db`` there. The train run's stderr, piped, also shows TensorFlow's
quiet start and the per-instrument progress line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON_BLOCK = re.compile(r"^([ \t]*)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
# What TensorFlow prints as it starts on a CPU machine, unless gatecast keeps it quiet.
START_UP_NOISE = (
    "cuInit",
    "oneDNN custom operations",
    "Unable to register cuDNN factory",
    "Could not find cuda drivers",
    "absl::InitializeLog",
    "cpu_feature_guard",
)


def python_blocks(markdown: str) -> list[str]:
    """The code of every fenced Python block, list indentation removed."""
    return [textwrap.dedent(match.group(2)) for match in PYTHON_BLOCK.finditer(markdown)]


def test_python_blocks_are_found_in_lists_too():
    text = "a\n\n  ```python\n  x = 1\n  ```\n\n```python\ny = 2\n```\n```bash\nz\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n"]


def _environment() -> dict[str, str]:
    """This process's environment without the settings the tests or the user may have made."""
    drop = {"MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PYTHONPATH"}
    drop |= {"TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES"}  # gatecast must set what it needs
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of the project whose store holds a trained ``gatecast-lstm-GSPC``."""
    copy = tmp_path_factory.mktemp("project")
    for name in ("core", "models", "pipelines", "configs", "data"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("README.md", "pyproject.toml"):
        shutil.copy2(REPO / name, copy / name)
    argv = [sys.executable, "-m", "pipelines", "train", "--config", "configs/smoke.yaml"]
    argv += ["--set", "data.instruments=[GSPC]", "--set", "tracking.registered_model=gatecast-lstm"]
    env = {**_environment(), "PYTHONPATH": str(copy)}
    done = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # the copy's own store, found without a variable
    assert (copy / "mlruns" / "mlflow.db").is_file()
    return copy, done


@pytest.mark.slow
def test_a_cpu_run_prints_no_tensorflow_start_up_lines_and_a_line_per_instrument(project):
    _, done = project
    noise = [line for line in done.stderr.splitlines() if any(n in line for n in START_UP_NOISE)]
    assert noise == []
    # stderr is a pipe, not a terminal: no bar, a line per instrument with the time it took
    assert re.search(r"train GSPC: 6 forecasters, \d+\.\d s", done.stderr), done.stderr[-2000:]
    assert "fit/s]" not in done.stderr


@pytest.mark.slow
def test_every_python_block_of_the_readme_runs_as_written(project):
    copy, _ = project
    blocks = python_blocks((copy / "README.md").read_text())
    assert blocks, "README.md has no Python block"
    env = {**_environment(), "PYTHONPATH": str(copy)}
    for k, code in enumerate(blocks):
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"block {k}:\n{code}\n{done.stderr[-3000:]}"
        if "model.predict" in code:
            assert "lstm_seed0" in done.stdout, done.stdout
        noise = [ln for ln in done.stderr.splitlines() if any(n in ln for n in START_UP_NOISE)]
        assert noise == [], f"block {k}"  # the model starts TensorFlow quietly too
    assert not (copy / "mlflow.db").exists()  # no stray store in the working directory
    assert not list(copy.glob("*.db"))
