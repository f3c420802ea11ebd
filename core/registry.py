"""Components by name: forecasters and strategies found through entry points.

A component is a class registered under an entry point group of its kind
(``gatecast.forecasters``, ``gatecast.strategies``) in the ``pyproject.toml``
of the package that ships it; gatecast's own built-ins register the same way.
A config names one by its registered name, or by ``package.module:Class`` for
a class that is not installed as a package (a file on ``PYTHONPATH``).

The pipelines look a component up here and never name one: what they do with
it follows from what its class declares.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points

FORECASTERS = "gatecast.forecasters"
STRATEGIES = "gatecast.strategies"


class RegistryError(LookupError):
    """A kind that names no registered component, or a class that cannot be loaded."""


def names(group: str) -> tuple[str, ...]:
    """The registered names of ``group``, sorted."""
    return tuple(sorted({ep.name for ep in entry_points(group=group)}))


def load(group: str, kind: str) -> type:
    """The class registered as ``kind`` in ``group``, or the class ``kind`` names.

    Raises:
        RegistryError: the message names the kind, suggests the closest
            registered name and lists them all, or says why the module or class
            could not be loaded.
    """
    if ":" in kind:
        return _load_path(kind)
    found = [ep for ep in entry_points(group=group) if ep.name == kind]
    if not found:
        known = names(group)
        close = difflib.get_close_matches(kind, known, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RegistryError(
            f"unknown kind {kind!r}: {hint}registered ({group}): {', '.join(known) or 'none'}; "
            "or give 'package.module:Class'"
        )
    if len({ep.value for ep in found}) > 1:
        where = ", ".join(sorted(ep.value for ep in found))
        raise RegistryError(f"kind {kind!r} is registered twice in {group}: {where}")
    try:
        return found[0].load()
    except Exception as err:  # noqa: BLE001 -- a broken plug-in is reported, not raised raw
        raise RegistryError(f"kind {kind!r} ({found[0].value}) failed to load: {err}") from err


def _load_path(path: str) -> type:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise RegistryError(f"kind {path!r}: expected 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RegistryError(
            f"kind {path!r}: module {module_name!r} not found ({err}); put its folder on "
            "PYTHONPATH or install its package"
        ) from err
    target = getattr(module, attribute, None)
    if not isinstance(target, type):
        raise RegistryError(f"kind {path!r}: {module_name} has no class {attribute!r}")
    return target
