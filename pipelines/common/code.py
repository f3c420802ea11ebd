"""The project modules a module runs, read from the import statements of the source.

Imports are read with :mod:`ast` (every ``import`` statement, including those
inside functions), so nothing is imported and only the standard library is
needed: make can run this before the virtual environment exists. A module
named only in a string (``importlib.import_module``) is not seen, with one
exception: the forecasters come through the registry (entry points), so a
module that builds them (it imports ``pipelines.execution.walkforward``) also
runs every project module registered in ``pyproject.toml``'s
``gatecast.forecasters`` group. Used by the Makefile's prerequisites
(``pipelines.stages.depends``), the unit cache's key
(``pipelines.execution.unit_cache``) and the code a registered model ships
(``pipelines.tracking.pyfunc_model``).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "models", "strategies", "pipelines")
# The module that builds forecasters from the registry, and the registry's group.
BUILDS_FORECASTERS = "pipelines.execution.walkforward"
FORECASTER_GROUP = "gatecast.forecasters"


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The source file of a project module, or None when it is not one."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(module: str, path: Path, root: Path) -> set[str]:
    """Project modules named by the import statements of one module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from package import module` names a module; `from module import name` does not
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if module_file(name, root)}


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: k + 1]) for k in range(len(parts))]


def registered_modules(root: Path = ROOT) -> list[str]:
    """Project modules of the forecasters registered in ``root``'s ``pyproject.toml``."""
    path = root / "pyproject.toml"
    if not path.is_file():
        return []
    groups = tomllib.loads(path.read_text(encoding="utf-8"))["project"].get("entry-points", {})
    values = groups.get(FORECASTER_GROUP, {}).values()
    return sorted({v.partition(":")[0] for v in values if module_file(v.partition(":")[0], root)})


def code_files(start: str, root: Path = ROOT) -> list[Path]:
    """Files of ``start`` and every project module it imports, transitively, sorted."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module == BUILDS_FORECASTERS:
            todo.extend(registered_modules(root))
        for name in _with_parents(module):
            if name in seen or module_file(name, root) is None:
                continue
            seen.add(name)
            path = module_file(name, root)
            assert path is not None
            todo.extend(_imported(name, path, root) - seen)
    return sorted(path for name in seen if (path := module_file(name, root)))
