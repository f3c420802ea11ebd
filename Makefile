# gatecast: make is the pipeline. `make help` lists the targets.
# Each stage writes a real file under build/<config name>/, so a stage whose
# inputs did not change is not redone.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gatecast-installed
CONFIG ?= configs/default.yaml
NAME   := $(basename $(notdir $(CONFIG)))
BUILD  := build/$(NAME)
REPORT := reports/$(NAME)/index.html
HOST   ?= 127.0.0.1
PORT   ?= 5000

# The stages, their order, their files and the code each runs come from one list
# (pipelines/common/stages.py) and the imports: `python -m pipelines.stages.depends`
# (standard library only) writes them into build/.stage-code.mk, made again whenever a
# module changes, and the stage rules below are made from it. A stage is redone when its
# config, its input files, the stage before it or any module it runs changed.
CODE_FILES   := $(shell find core models strategies pipelines -name '*.py' -not -path '*/__pycache__/*')
STAGE_CODE   := build/.stage-code.mk
ENTRY        := pipelines/__main__.py pipelines/stages/run.py pipelines/stages/__init__.py
# What a stage reads besides the stage before it and its code:
INPUTS.data   = $(STAMP) $(CONFIG) $(wildcard data/sample/*.csv) $(ENTRY)
INPUTS.report = $(wildcard pipelines/report/templates/*)

$(STAGE_CODE): $(CODE_FILES)
	@mkdir -p $(@D) && $(PYTHON) -m pipelines.stages.depends > $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@
ifeq ($(filter help setup clean clean-runs server server-stop,$(MAKECMDGOALS)),)
-include $(STAGE_CODE)
endif

export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.DEFAULT_GOAL := help
.PHONY: help setup all run check test test-fast lint format bench bench-gpu bench-gpu-backends ui clean clean-runs

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'
	@$(PYTHON) -m pipelines.stages.depends | sed -n 's/^STAGE_HELP\.\([a-z]*\) := \(.*\)/  \x1b[36m\1\x1b[0m|\2/p' | \
	  awk -F'|' '{printf "%-23s %s (one stage)\n", $$1, $$2}'
	@echo "  CONFIG=$(CONFIG) (override: make all CONFIG=configs/smoke.yaml)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

setup: $(STAMP) ## Create .venv and install gatecast with its dev tools (skipped when up to date)

# The tests also run the Ray executor: `make test` adds the ray extra; `make all` does not need it.
RAY_STAMP := $(VENV)/.gatecast-ray
$(RAY_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	@touch $@

# Each stage and the file it writes, in order (see `all`).
STAGE_FILES = $(foreach stage,$(STAGES),$(stage):$(STAGE_FILE.$(stage)))

# `all` asks make (-q) which stage is the first whose file is out of date and runs it
# and the ones after it in one process (`pipelines run --from`), so TensorFlow and
# MLflow are imported once, not once per stage. The question is its own recipe line:
# make runs lines that call $(MAKE) even under `make -n`, and that one only writes
# $(BUILD)/.first-stale.
all: $(STAMP) ## The main job on the bundled sample: data, search, forecasts, backtests, report
	@mkdir -p $(BUILD) && for pair in $(STAGE_FILES); do \
	  $(MAKE) --no-print-directory -q "$${pair#*:}" 2>/dev/null || { echo "$${pair%%:*}"; break; }; \
	done > $(BUILD)/.first-stale
	@first=$$(cat $(BUILD)/.first-stale); \
	if [ -n "$$first" ]; then $(PY) -m pipelines run --config $(CONFIG) --from "$$first"; \
	else echo "up to date: every stage's inputs are unchanged"; echo "report: $(REPORT)"; fi

# One rule per stage: `make <stage>` makes its file from the stage before it, its inputs
# and its code, running `python -m pipelines <stage>`.
define stage_rule
$(STAGE_FILE.$(1)): $(STAGE_FILE.$(STAGE_BEFORE.$(1))) $(INPUTS.$(1)) $($(STAGE_CODE.$(1)))
	$$(PY) -m pipelines $(1) --config $$(CONFIG)
.PHONY: $(1)
$(1): $(STAGE_FILE.$(1))
endef
$(foreach stage,$(STAGES),$(eval $(call stage_rule,$(stage))))

run: $(STAMP) ## Run every stage unconditionally (python -m pipelines run)
	$(PY) -m pipelines run --config $(CONFIG)

check: $(STAMP) ## Look-ahead check of every forecaster and strategy of CONFIG (gatecast check)
	$(PY) -m pipelines check --config $(CONFIG)

# Two pytest-xdist workers (TEST_WORKERS=0: one process); tests grouped by module, and by
# the session fixture they share (tests/conftest.py), so nothing expensive is made twice.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

test: $(RAY_STAMP) ## Run the test suite (installs the ray extra)
	$(PYTEST)

test-fast: $(RAY_STAMP) ## Run the tests not marked slow
	$(PYTEST) -m "not slow"

lint: $(STAMP) ## ruff check and format check, and the import-linter contracts (the layering)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: $(STAMP) ## Apply ruff's formatting and safe fixes
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: $(STAMP) ## Benchmarks: measured ratios, printed side by side
	$(PY) -m benchmarks

bench-gpu: $(STAMP) ## On an NVIDIA GPU: GateLSTM vs cuDNN LSTM (numbers, speed), smoke run; else says so
	$(PY) -m benchmarks.gpu

bench-gpu-backends: $(STAMP) ## On a GPU: GateLSTM vs Keras's cuDNN LSTM on the JAX and PyTorch backends
	$(PY) -m benchmarks.gpu_backends

ui: $(STAMP) ## MLflow UI on 127.0.0.1:5000 (HOST=, PORT= to change) against the project's store
	$(PY) -m pipelines.tracking ui --host $(HOST) --port $(PORT)

# A team's MLflow server: PostgreSQL and proxied artifacts, all under SERVER_DIR (git-ignored);
# docs/team-server.md. It needs the server extra (MLflow's PostgreSQL driver), installed once.
SERVER_DIR   ?= server
SERVER_STAMP := $(VENV)/.gatecast-server
$(SERVER_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[server]'
	@touch $@

.PHONY: server server-stop
server: $(SERVER_STAMP) ## Team MLflow server on PostgreSQL in server/ (HOST=, PORT=, SERVER_DIR=); prints the URI to export
	@$(PY) -m pipelines.tracking server --dir $(SERVER_DIR) --host $(HOST) --port $(PORT)

server-stop: ## Stop make server's MLflow server and its PostgreSQL
	@$(PY) -m pipelines.tracking server-stop --dir $(SERVER_DIR)

clean: ## Remove build outputs and reports (keeps .venv and the MLflow store)
	rm -rf build reports benchmarks/results .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

clean-runs: ## Delete the embedded MLflow store (mlruns/mlflow.db and artifacts)
	find mlruns -mindepth 1 -not -name README.md -delete
