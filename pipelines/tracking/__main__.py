"""``python -m pipelines.tracking ui|uri|server|server-stop``: the MLflow UI on this project's
store, or its URI (``pipelines.tracking.uri.main``); ``ui`` prints a model-training-view link per
experiment; ``server`` and ``server-stop`` run a team server on PostgreSQL
(``pipelines.tracking.team_server``, ``make server``)."""

from __future__ import annotations

import sys

from pipelines.tracking.store import experiments
from pipelines.tracking.team_server import add_commands
from pipelines.tracking.uri import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], experiments=experiments, commands=add_commands))
