"""``python -m pipelines.tracking ui|uri``: the MLflow UI on this project's store, or its URI
(``pipelines.tracking.uri.main``); ``ui`` prints a model-training-view link per experiment."""

from __future__ import annotations

import sys

from pipelines.tracking.store import experiments
from pipelines.tracking.uri import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], experiments=experiments))
