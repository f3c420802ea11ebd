"""Where gatecast's MLflow store is, and ``python -m pipelines.tracking ui|uri`` (``make ui``).

By default an embedded store inside the repository, whatever the working
directory: runs in ``sqlite:///<repo>/mlruns/mlflow.db``, artifacts under
``<repo>/mlruns/artifacts/<experiment>``. ``MLFLOW_TRACKING_URI`` takes over
when set; a ``sqlite:///.../x.db`` store keeps its artifacts in
``.../artifacts``, a server decides itself. No MLflow here (it is started as
a command): ``pipelines.tracking`` opens the store.

Links to an experiment (``experiment_url``) open its runs in the UI's
model-training view: ``/#/experiments/<id>/runs?workflowType=machine_learning``.
MLflow 3.17's UI opens every experiment in its GenAI view (traces, "Detect
issues") unless the link asks, whatever the experiment's tags say; clicking
"Model training" in its sidebar once per browser does the same.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipelines.config import REPO_ROOT

STORE_DIRECTORY = REPO_ROOT / "mlruns"
DEFAULT_TRACKING_URI = f"sqlite:///{STORE_DIRECTORY / 'mlflow.db'}"
DEFAULT_ARTIFACT_ROOT = STORE_DIRECTORY / "artifacts"
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
UI_ADDRESS = "http://127.0.0.1:5000"  # where ``make ui`` serves the store
# MLflow 3's server also starts a job runner (GenAI scorers, trace roll-ups), processes and
# memory gatecast has no use for; a user's own setting wins (server_environment)
SERVER_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded store in ``<repo>/mlruns``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def registry_uri(uri: str | None = None) -> str:
    """Where models are registered: ``MLFLOW_REGISTRY_URI`` when set, else the tracking store.

    Said explicitly because MLflow's own default, when neither variable is set,
    is a ``mlflow.db`` in the working directory: the registry would not be the
    store the runs and logged models are in.
    """
    return os.environ.get("MLFLOW_REGISTRY_URI") or uri or tracking_uri()


def display_uri(uri: str | None = None) -> str:
    """The tracking URI without any user:password part, safe to print or write to files."""
    uri = uri or tracking_uri()
    parts = urlparse(uri)
    if parts.password is None and parts.username is None:
        return uri
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()


def masked(text: str, uri: str) -> str:
    return _CREDENTIALS.sub("", text.replace(uri, display_uri(uri)))


def sqlite_path(uri: str) -> Path | None:
    return Path(unquote(uri[len("sqlite:///") :])) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str | None = None) -> Path | None:
    """Where experiments created by gatecast keep artifacts, for an embedded store.

    ``<repo>/mlruns/artifacts`` for the default store, ``<dir>/artifacts`` for
    ``sqlite:///<dir>/<file>``; None for a server or any other store (it
    chooses the location itself).
    """
    uri = uri or tracking_uri()
    if uri == DEFAULT_TRACKING_URI:
        return DEFAULT_ARTIFACT_ROOT
    path = sqlite_path(uri)
    return path.parent / "artifacts" if path is not None else None


def experiment_url(experiment_id: str, ui: str | None = None) -> str:
    """The link that opens an experiment's runs in the MLflow UI's model-training view.

    Args:
        experiment_id: The MLflow experiment id.
        ui: The UI's address; by default the tracking server's (password
            masked) when the store is one, else ``make ui``'s.
    """
    if ui is None:
        uri = tracking_uri()
        ui = display_uri(uri) if urlparse(uri).scheme in {"http", "https"} else UI_ADDRESS
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_url(experiment_id: str, run_id: str, uri: str | None = None) -> str:
    """The link to one run in the MLflow UI of the store at ``uri`` (default: this
    process's): absolute on a tracking server (password masked), else relative
    (``#/experiments/<id>/runs/<run>``), which opens in whatever UI serves the store.
    """
    uri = uri or tracking_uri()
    path = f"#/experiments/{experiment_id}/runs/{run_id}"
    if urlparse(uri).scheme in {"http", "https"}:
        return f"{display_uri(uri).rstrip('/')}/{path}"
    return path


def server_command(
    host: str = "127.0.0.1",
    port: int = 5000,
    backend_uri: str | None = None,
    artifacts: str | Path | None = None,
) -> list[str]:
    """The ``mlflow server`` command line serving a SQLite store and its artifacts."""
    backend_uri = backend_uri or tracking_uri()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri]
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    root = Path(artifacts) if artifacts else artifact_root(backend_uri)
    if root is not None:
        # runs created through the server keep their artifacts next to the others
        command += ["--artifacts-destination", root.as_uri()]
    return command


def server_environment() -> dict[str, str]:
    """The environment an ``mlflow server`` of gatecast's runs in: this process's, with
    :data:`SERVER_DEFAULTS` where it does not set them."""
    return {**SERVER_DEFAULTS, **os.environ}


def main(
    argv: list[str] | None = None,
    experiments: Callable[[], list[tuple[str, str]]] | None = None,
    commands: Callable[[argparse._SubParsersAction], None] | None = None,
) -> int:
    """``ui`` serves the store and prints a link per experiment (``experiments`` lists
    their ids and names); ``uri`` prints where the store is. ``commands`` adds more
    subcommands, each with a ``handler(args) -> int`` default (the team server's)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.tracking",
        description="gatecast's MLflow store: serve it, print where it is, or run a team server.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ui = sub.add_parser("ui", help="serve the tracking store with the MLflow UI")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    ui.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    sub.add_parser("uri", help="print the tracking URI (password masked) and artifact root")
    if commands is not None:
        commands(sub)
    args = parser.parse_args(argv)
    if hasattr(args, "handler"):
        return args.handler(args)
    uri = tracking_uri()
    if args.command == "uri":
        print(display_uri(uri))
        root = artifact_root(uri)
        print(root if root is not None else "(artifact root chosen by the tracking server)")
        return 0
    if urlparse(uri).scheme in {"http", "https", "databricks"}:
        print(f"MLFLOW_TRACKING_URI is {display_uri(uri)}: open that server's UI", file=sys.stderr)
        return 2
    path = sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    address = f"http://{args.host}:{args.port}"
    print(f"MLflow UI for {uri} on {address} (Ctrl-C stops it)")
    listed = experiments() if experiments is not None else []
    if listed:
        print("experiments, in the model-training view (runs, metrics, charts):")
    for experiment_id, name in listed:
        print(f"  {name}: {experiment_url(experiment_id, address)}")
    sys.stdout.flush()
    try:
        return subprocess.call(server_command(args.host, args.port, uri), env=server_environment())
    except KeyboardInterrupt:
        return 0
