"""Stage outputs: written atomically, read back with errors that say which stage to rerun."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.errors import DataError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    A reader (or ``make``) never sees a half-written file: after a failure the
    old file, or none, is there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary outputs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_stage_summary(path: Path, stage: str) -> dict[str, Any]:
    """The ``summary.json`` a stage wrote, with an ``instruments`` mapping.

    Args:
        path: the summary file.
        stage: the stage that writes it (named in the error, with how to rerun it).
    """
    if not path.is_file():
        raise DataError(
            f"{path} not found: run `python -m pipelines {stage} --config ...` first "
            "(or `python -m pipelines run` for every stage)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}); rerun the {stage} stage") from None
    if not isinstance(data, dict) or not isinstance(data.get("instruments"), dict):
        raise DataError(f"{path}: expected an 'instruments' mapping; rerun the {stage} stage")
    return data
