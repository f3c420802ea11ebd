"""The repository's root, and the names that may become file or folder names."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# A name that becomes a file or folder name (instruments, the config, the experiment).
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._^=-]*")


def is_plain_name(name: object, max_length: int = 64) -> bool:
    """Letters, digits, '.', '_', '-', '^', '=' (at most ``max_length``), no '..': never a path."""
    return (
        isinstance(name, str)
        and len(name) <= max_length
        and PLAIN_NAME.fullmatch(name) is not None
        and ".." not in name
    )
