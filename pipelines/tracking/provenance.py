"""What a tracked run records about itself: config, code, libraries, inputs, process.

Plain Python, no MLflow: ``pipelines.tracking`` turns these into the params
and tags of every run (and re-exports the public names).
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import REPO_ROOT, Config

VERSIONED_LIBRARIES = (
    "tensorflow",
    "keras",
    "backtrader",
    "mlflow",
    "pandas",
    "numpy",
    "statsmodels",
)
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value
_KEY_BAD_CHARS = re.compile(r"[^\w./\- ]")


def flatten_config(cfg: Config) -> dict[str, str]:
    """The resolved config as flat ``section.key`` -> string params."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[prefix] = text[:MAX_PARAM_LENGTH]

    walk("", cfg.model_dump(mode="json"))
    out["experiment_name"] = cfg.experiment_name
    return out


def config_yaml(cfg: Config) -> str:
    """The resolved config (defaults filled in) as YAML."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_state() -> dict[str, str]:
    """Commit and dirty flag of the working tree (``unknown`` outside a git checkout)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"gatecast.git.commit": "unknown", "gatecast.git.dirty": "unknown"}
    status = _git("status", "--porcelain")
    dirty = "unknown" if status is None else str(bool(status)).lower()
    return {
        "gatecast.git.commit": commit,
        "gatecast.git.dirty": dirty,
        "mlflow.source.git.commit": commit,
    }


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the results."""
    out = {}
    for name in VERSIONED_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_key(text: str) -> str:
    """A string made safe for an MLflow param/metric/tag key."""
    return _KEY_BAD_CHARS.sub("_", text)


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment (some containers)
        return "unknown"


def run_tags(
    cfg: Config,
    stage: str,
    inputs: Mapping[str, str | Path] | None = None,
    tags: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, str]:
    """The tags every run of a stage carries (``pipelines.tracking`` lists them).

    ``gatecast.host`` and ``gatecast.pid`` let a later process find the runs
    of a process that was killed outright; ``mlflow.*`` are the run-context
    tags that ``mlflow.start_run`` would set.
    """
    out = {
        "mlflow.user": _user(),
        "mlflow.source.name": sys.argv[0] if sys.argv and sys.argv[0] else "<console>",
        "mlflow.source.type": "LOCAL",
        "gatecast.config": cfg.name,
        "gatecast.stage": stage,
        "gatecast.seed": str(cfg.seed),
        "gatecast.command": command or shlex.join(sys.orig_argv),
        "gatecast.host": socket.gethostname(),
        "gatecast.pid": str(os.getpid()),
        **git_state(),
        **{f"gatecast.version.{k}": v for k, v in library_versions().items()},
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    for label, path in (inputs or {}).items():
        out[f"gatecast.input.{safe_key(label)}.sha256"] = sha256_file(path)
        out[f"gatecast.input.{safe_key(label)}.path"] = str(path)
    return out


def own_inputs(tags: Mapping[str, str], instrument: str | None) -> dict[str, str]:
    """``tags`` without the ``gatecast.input.<file>.*`` tags of other instruments' files.

    A stage's run reads every instrument's files; a run or model of one instrument
    keeps only those named after it (``<instrument>.<ext>``), so its tags stay a
    fixed size whatever the universe's. ``instrument`` None, or an instrument with
    no file of its own, keeps them all.
    """
    if instrument is None:
        return dict(tags)
    labels = {
        key: match.group(1)
        for key in tags
        if (match := re.fullmatch(r"gatecast\.input\.(.+)\.(?:sha256|path)", key))
    }
    mine = {key for key, label in labels.items() if label.startswith(f"{safe_key(instrument)}.")}
    if not mine:
        return dict(tags)
    return {key: value for key, value in tags.items() if key not in labels or key in mine}


def model_lineage(
    run_tags: Mapping[str, str],
    config_text: str,
    metrics: Mapping[str, float],
    fold: Mapping[str, Any],
    instrument: str | None = None,
) -> dict[str, str]:
    """The tags of a registered model version that say where it came from.

    ``gatecast.lineage.*``: the run (id, name, stage, config, command), the
    commit and whether the tree was dirty, the SHA-256 of the resolved config,
    the SHA-256 of each input data file (``gatecast.lineage.data.<file>``),
    the final fold's dates; ``gatecast.metric.<name>``: the run's metrics.

    Args:
        run_tags: The tags of the run that trained the model (``run_tags`` plus
            ``gatecast.run_id`` and ``gatecast.run_name``).
        config_text: The resolved config as YAML (``config_yaml``).
        metrics: Metric name -> value of the run (out-of-sample, whole period).
        fold: The final walk-forward fold (``Fold.as_dict()``), or empty.
        instrument: The model's instrument: only its own data file's hash is kept (the
            stage's run reads every instrument's); None keeps them all.
    """
    out = {
        "gatecast.lineage.run_id": run_tags.get("gatecast.run_id", "unknown"),
        "gatecast.lineage.run_name": run_tags.get("gatecast.run_name", "unknown"),
        "gatecast.lineage.config": run_tags.get("gatecast.config", "unknown"),
        "gatecast.lineage.config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "gatecast.lineage.git.commit": run_tags.get("gatecast.git.commit", "unknown"),
        "gatecast.lineage.git.dirty": run_tags.get("gatecast.git.dirty", "unknown"),
        "gatecast.lineage.command": run_tags.get("gatecast.command", "unknown"),
        "gatecast.lineage.seed": run_tags.get("gatecast.seed", "unknown"),
    }
    data = {}
    for key, value in own_inputs(run_tags, instrument).items():
        match = re.fullmatch(r"gatecast\.input\.(.+)\.sha256", key)
        if match:
            data[match.group(1)] = value
    for label, value in data.items():
        out[f"gatecast.lineage.data.{label}"] = value
    for key, value in fold.items():
        out[f"gatecast.lineage.fold.{key}"] = str(value)
    for key, value in metrics.items():
        out[f"gatecast.metric.{safe_key(key)}"] = f"{value:.6g}"
    return out


def model_description(
    forecaster: str, instrument: str, seeds: int, lineage: Mapping[str, str], link: str
) -> str:
    """A model version's description (Markdown): what it is, what trained it, how it scored.

    Args:
        forecaster: The forecaster's name under ``forecasters:``.
        instrument: The instrument it forecasts.
        seeds: How many seeds it averages.
        lineage: Its tags from ``model_lineage``.
        link: Where the training run opens in the MLflow UI (``uri.run_url``).
    """
    get = lineage.get
    commit = get("gatecast.lineage.git.commit", "unknown")
    dirty = " (uncommitted changes)" if get("gatecast.lineage.git.dirty") == "true" else ""
    data = [
        f"`{k.removeprefix('gatecast.lineage.data.')}` sha256 `{v[:12]}`"
        for k, v in lineage.items()
        if k.startswith("gatecast.lineage.data.")
    ]
    scores = [
        f"{k.removeprefix('gatecast.metric.')} {v}"
        for k, v in lineage.items()
        if k.startswith("gatecast.metric.")
    ]
    trained = (
        f"trained on {get('gatecast.lineage.fold.train_start', '?')[:10]} to "
        f"{get('gatecast.lineage.fold.train_end', '?')[:10]} (the final walk-forward fold)"
    )
    lines = [
        f"`{forecaster}` forecast of {instrument}'s next close: the mean of {seeds} seed(s), "
        f"{trained}.",
        "",
        f"- run `{get('gatecast.lineage.run_name')}` (`{get('gatecast.lineage.run_id')}`), "
        f"config `{get('gatecast.lineage.config')}` "
        f"(sha256 `{get('gatecast.lineage.config_sha256', '')[:12]}`): {link}",
        f"- code: commit `{commit[:12]}`{dirty}",
        f"- data: {', '.join(data) or 'not recorded'}",
        f"- out-of-sample metrics of the run: {', '.join(scores) or 'none'}",
        "- input: bars with a `date` column (or a DatetimeIndex) and open, high, low, close, "
        "volume in any case; `params={'start': 'YYYY-MM-DD'}` limits the forecast dates.",
    ]
    return "\n".join(lines)
