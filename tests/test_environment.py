"""The project set-up: pyproject.toml and environment.yml agree, make help, imports, licence."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions
from importlib.metadata import requires as dist_requires
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["core", "models", "strategies", "pipelines"]
LOCAL = {*PACKAGES, "benchmarks", "tools", "tests"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def requirements(pyproject: dict, extra: str | None = None) -> dict[str, Requirement]:
    project = pyproject["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {canonical(r.name): r for r in map(Requirement, specs)}


def test_environment_yml_is_python_pip_and_the_project_only(pyproject):
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = [d["pip"] for d in deps if isinstance(d, dict)]
    assert len(deps) == 3 and len(pip) == 1, f"expected python, pip and a pip list, got {deps}"
    assert pip[0] == ["-e .[dev]"], "dependencies belong in pyproject.toml, not environment.yml"
    (python,) = [d for d in conda if d.startswith("python")]
    assert [d for d in conda if d != python] == ["pip"]
    version = re.fullmatch(r"python\s*=+\s*([0-9.]+)\*?", python)
    assert version, f"pin python to a version in environment.yml, got {python!r}"
    requires = SpecifierSet(pyproject["project"]["requires-python"])
    assert requires.contains(version.group(1)), f"{python} does not satisfy {requires}"


def test_pyproject_declares_the_runtime_stack_with_bounds(pyproject):
    runtime = requirements(pyproject)
    for name in ["tensorflow", "keras", "backtrader", "pandas", "pandas-datareader", "mlflow"]:
        assert name in runtime, f"{name} missing from [project] dependencies"
    assert str(runtime["backtrader"].specifier) == "==1.9.78.123"
    unbounded = [name for name, req in runtime.items() if not req.specifier]
    assert unbounded == [], f"give these dependencies version bounds: {unbounded}"
    keras = runtime["keras"].specifier
    assert keras.contains("3.8") and not keras.contains("2.15"), "Keras 3 is required"
    dev = requirements(pyproject, "dev")
    assert {"pytest", "ruff", "responses"} <= set(dev)


def _imports(paths: list[Path]) -> dict[str, Path]:
    """Top-level third-party modules imported anywhere under ``paths`` -> one file using it."""
    found: dict[str, Path] = {}
    for root in paths:
        for file in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in LOCAL:
                        found.setdefault(top, file)
    return found


def _brought_by(names: set[str]) -> set[str]:
    """Distributions that the installed distributions ``names`` require (one level)."""
    out = set()
    for name in names:
        try:
            out |= {canonical(Requirement(r).name) for r in dist_requires(name) or []}
        except PackageNotFoundError:
            continue
    return out


@pytest.mark.parametrize(
    ("folders", "extras"),
    [
        (
            ["core", "models", "strategies", "pipelines", "benchmarks", "tools"],
            ["online", "ray", "docs", "gpu-backends"],
        ),
        # make test installs the ray extra beside dev (the Ray executor's tests)
        (["tests"], ["dev", "ray"]),
    ],
)
def test_every_imported_package_is_declared_in_pyproject(pyproject, folders, extras):
    declared = set(requirements(pyproject))
    for extra in extras:
        declared |= set(requirements(pyproject, extra))
    if folders == ["tests"]:
        # Tests may use what their declared tools bring along (pytest brings packaging).
        declared |= _brought_by(set(requirements(pyproject, "dev")))
    providers = packages_distributions()
    undeclared = {}
    for module, file in _imports([REPO_ROOT / f for f in folders]).items():
        # a module of an optional extra that is not installed here maps to no distribution:
        # it counts as declared when its name is the declared distribution's (torch)
        dists = {canonical(d) for d in providers.get(module, [])} or {canonical(module)}
        if not dists & declared:
            undeclared[module] = str(file.relative_to(REPO_ROOT))
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


def _documented_targets() -> dict[str, str]:
    targets = {}
    for line in (REPO_ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z_-]+):.*?## (.*)$", line)
        if match:
            targets[match.group(1)] = match.group(2).strip()
    return targets


def test_make_help_lists_every_documented_target():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    targets = _documented_targets()
    for needed in ["help", "setup", "all", "test", "lint", "ui", "bench", "clean"]:
        assert needed in targets, f"Makefile target {needed!r} has no '## ' comment"
    done = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown = {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", done.stdout).splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            shown[parts[0]] = parts[1].strip()
    for target, text in targets.items():
        assert shown.get(target) == text, f"make help shows {target!r} as {shown.get(target)!r}"


def test_packages_import_from_the_repo_root_without_install():
    code = f"import {', '.join(PACKAGES)}; print({', '.join(f'{p}.__file__' for p in PACKAGES)})"
    env = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    files = [Path(p) for p in done.stdout.split()]
    assert files == [REPO_ROOT / pkg / "__init__.py" for pkg in PACKAGES]
    stage = subprocess.run(
        [sys.executable, "-m", "pipelines", "--help"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert stage.returncode == 0, stage.stderr
    assert "data" in stage.stdout


def test_licence_is_gpl_3_or_later(pyproject):
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    assert pyproject["project"]["license"] == "GPL-3.0-or-later"
