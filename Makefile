# flexsync — see README.md. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# checkov lives in its own venv: its dependency tree conflicts with dbt's pins.
TOOLS_VENV := .venv-tools
CHECKOV_VERSION := 3.3.30
CHECKOV := $(TOOLS_VENV)/bin/checkov
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
# As in the image (Dockerfile): no MALLOC_ARENA_MAX, the flexsync command sets its own.
unexport MALLOC_ARENA_MAX
DEMO_DIR := data/demo
DEMO_ACCOUNT_UUID := 6f1f7a2e-1d0c-4f55-9a35-0d3f2b7c9e11

.PHONY: help setup test pytest lint checkov dbt-test demo sync docs reliability bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/flexsync: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e . --config-settings editable_mode=compat
	touch $(BIN)/flexsync

setup: $(BIN)/flexsync ## Create .venv with the flexsync command (from requirements.lock)

test: setup lint checkov dbt-test pytest ## Run every test: linters, checkov, dbt unit/data tests, pytest

pytest: setup
	$(BIN)/pytest -q

reliability: setup ## Inject real faults (SIGKILL, outages, hostile files ...) and print the figures
	$(BIN)/pytest -q tests/reliability -p tests.reliability.report

lint: setup ## ruff, mypy and sqlfluff
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/sqlfluff lint models macros tests/generic tests/singular --disable-progress-bar

$(TOOLS_VENV)/.checkov-$(CHECKOV_VERSION):
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install -q --disable-pip-version-check "checkov==$(CHECKOV_VERSION)"
	rm -f $(TOOLS_VENV)/.checkov-* && touch $@

checkov: $(TOOLS_VENV)/.checkov-$(CHECKOV_VERSION) ## checkov over deploy/: Kubernetes manifests and Terraform (offline)
	$(CHECKOV) --directory deploy --framework kubernetes terraform --skip-download --quiet --compact

dbt-test: setup ## dbt unit tests and data tests on the demo statement, in a scratch warehouse
	./scripts/dbt-test.sh

demo: setup ## Run the whole sync on the bundled statement against a local fake Wealthfolio
	./scripts/demo.sh

sync: setup ## Run the nightly job (flexsync sync) with the environment's configuration
	$(BIN)/flexsync sync

docs: setup ## Generate the dbt docs (target/index.html)
	BROKER_SYNC_DATA_DIR=$${BROKER_SYNC_DATA_DIR:-$(DEMO_DIR)} $(BIN)/dbt docs generate --project-dir . --profiles-dir .

bench: setup ## Speed and memory benchmarks (~15 min, 2 cores): writes benchmarks/RESULTS.md
	$(BIN)/python benchmarks/run.py

clean: ## Remove the venv, data and dbt artefacts
	rm -rf $(VENV) $(TOOLS_VENV) data target logs .pytest_cache .mypy_cache .ruff_cache
