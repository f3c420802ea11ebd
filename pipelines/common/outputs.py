"""Stage files: safe names, paths as messages show them, atomic writes, summaries read back.

One copy of each helper the stages share: :func:`safe_child` turns an
instrument or dataset name into a file name inside a folder, :func:`shown`
writes a path relative to the repository, :func:`write_json` and
:func:`write_parquet` write through :func:`atomic_write`, and
:func:`read_stage_summary` and :func:`read_stage_parquet` read a stage's files back
with errors that say which stage to rerun.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.common.errors import DataError
from pipelines.common.paths import REPO_ROOT, is_plain_name

if TYPE_CHECKING:
    import pandas as pd


def safe_child(directory: Path, name: str, suffix: str = "") -> Path:
    """``directory / (name + suffix)``, refusing a name that is not a plain ticker.

    The name is matched against the ticker pattern and the joined path is checked
    to stay inside ``directory`` (without following symlinks the user made).
    """
    if not is_plain_name(name):  # checked again here: a name is never a path
        raise DataError(
            f"{name!r} is not a plain instrument or dataset name: use letters, digits and "
            "'.', '_', '-', '^', '=' only (it becomes a file name, never a path)"
        )
    base = Path(os.path.abspath(directory))
    path = Path(os.path.abspath(base / f"{name}{suffix}"))
    if not path.is_relative_to(base) or path == base:
        raise DataError(f"{name!r} would point outside {base}; use a plain instrument name")
    return path


def shown(path: str | Path) -> str:
    """A path as messages and summaries write it: relative to the repository when inside it."""
    path = Path(os.path.abspath(path))
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


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


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that strict JSON can hold.

    NumPy scalars become Python numbers, NaN and infinities ``null``, timestamps
    text (the date, plus the time of intraday bars); dicts, lists and tuples are
    copied through.
    """
    import numpy as np
    import pandas as pd

    from core.bars import format_timestamp

    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return format_timestamp(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, payload: Any) -> None:
    """``payload`` as indented JSON (strict: NaN or infinity is an error), written atomically."""
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """``frame`` as Parquet (pyarrow, index kept), written atomically."""
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, engine="pyarrow"))


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


def read_stage_parquet(path: Path, stage: str) -> pd.DataFrame:
    """A Parquet file a stage wrote; a missing, truncated or corrupt one names the stage to rerun.

    Args:
        path: the file.
        stage: the stage that writes it.
    """
    import pandas as pd
    import pyarrow

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise DataError(
            f"{shown(path)}: not a readable Parquet file ({reason}); it is written by the "
            f"{stage} stage: rerun it (`python -m pipelines {stage} --config ...`, or "
            f"`make {stage}`)"
        ) from None
