"""Registered models: the final fold's forecaster of every forecaster that declares
``export``, logged as a pyfunc model of its run and registered with its lineage."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipelines.config import Config
from pipelines.tracking import LATEST_ALIAS, active_run, pyfunc_model
from pipelines.tracking.overhead import timed
from pipelines.tracking.provenance import model_description, model_lineage
from pipelines.tracking.uri import run_url


@dataclass(frozen=True)
class RegisteredModel:
    """Where ``log_model`` put the model.

    Args:
        name: Registered model name.
        version: The new version.
        alias: The alias moved to it.
        model_uri: ``models:/<name>@<alias>``.
    """

    name: str
    version: str
    alias: str
    model_uri: str


def registered_model_name(cfg: Config, instrument: str, forecaster: str) -> str:
    """``<tracking.registered_model>-<INST>`` for the report's candidate (e.g.
    ``gatecast-lstm-GSPC``), ``<tracking.registered_model>-<forecaster>-<INST>`` for
    any other forecaster that declares ``export``."""
    parts = [cfg.tracking.registered_model, instrument]
    if forecaster != cfg.report.candidate:
        parts.insert(1, forecaster)
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))


@timed
def log_model(
    cfg: Config,
    instrument: str,
    forecaster: str,
    cls: type,
    seeds: Sequence[bytes],
    example_bars: pd.DataFrame,
    fold: Mapping[str, Any] | None = None,
) -> RegisteredModel:
    """Log the final fold's forecaster (each seed) as a pyfunc model of the current run
    and register it (``pipelines.tracking.pyfunc_model``).

    The new version carries its lineage (``provenance.model_lineage``: this
    run, its commit, config hash, input data hashes, ``fold`` and the metrics
    logged so far without a step, i.e. the whole out-of-sample ones) as tags
    and in its description.

    Args:
        cfg: The resolved config (names the registered model).
        instrument: The instrument the model was trained on.
        forecaster: Its name under ``forecasters:`` (names the model's output columns).
        cls: The forecaster's class.
        seeds: Each seed's fitted forecaster as its ``to_bytes``, in seed order.
        example_bars: A short slice of bars (enough history for a few
            forecasts), the model's input example and the base of its signature.
        fold: The final walk-forward fold (``Fold.as_dict()``), which trained it.
    """
    run, name = active_run(), registered_model_name(cfg, instrument, forecaster)
    metrics = {m.key: m.value for m in run.pending_metrics if "/" not in m.key and not m.step}
    lineage = model_lineage(
        {**run.tags, "gatecast.run_id": run.run_id, "gatecast.run_name": run.name},
        run.stage.config_text,
        metrics,
        fold or {},
        instrument,
    )
    with run.stage.call(f"log the model {name} of run {run.name}"):
        version = pyfunc_model.log_and_register(
            run.stage.store,
            run.run_id,
            run.experiment_id,
            name,
            forecaster,
            cls,
            seeds,
            example_bars,
            params=run.stage.params,
            tags={"gatecast.instrument": instrument, "gatecast.config": cfg.name},
            description=f"gatecast {forecaster} forecaster of {instrument} (config {cfg.name})",
            version_tags=lineage,
            version_description=model_description(
                forecaster,
                instrument,
                len(seeds),
                lineage,
                run_url(run.experiment_id, run.run_id, run.stage.uri),
            ),
        )
    run.pending_tags.update(
        {"gatecast.registered_model": name, "gatecast.registered_version": version}
    )
    return RegisteredModel(name, version, LATEST_ALIAS, f"models:/{name}@{LATEST_ALIAS}")


@timed
def move_newest(models: Sequence[RegisteredModel]) -> None:
    """Point each model's alias ``newest`` at its version (call once the stage's work is done)."""
    if not models:
        return
    stage = active_run().stage
    for model in models:
        with stage.call(f"move the alias {model.alias} of {model.name}"):
            stage.store.set_registered_model_alias(model.name, model.alias, model.version)
