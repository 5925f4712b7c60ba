# The developer loop. `make install` once (creates .venv), then `make fmt`, `make check`,
# `make test`. .ci/run calls these same targets, so what passes here passes in CI.

.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
# Interpreter that creates the venv (Python >= 3.11).
PYTHON ?= python3
PY ?= $(VENV)/bin/python
RUFF ?= $(VENV)/bin/ruff
MYPY ?= $(VENV)/bin/mypy
PYTEST ?= $(VENV)/bin/pytest
LINT_IMPORTS ?= $(VENV)/bin/lint-imports
# torch comes first and pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# Extra pytest arguments, e.g. `make test ARGS="-m 'not kafka' -x"`.
ARGS ?=

# Folders that exist (git does not keep empty ones, so a fresh clone may lack some).
LINT_PATHS := $(wildcard src tests benchmarks examples fuzz)
BENCHMARKS := $(sort $(wildcard benchmarks/*.py))

.PHONY: help install demo quickstart fmt check test bench

help: ## List the targets
	@echo "usage: make TARGET"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z_-]*:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## Create .venv if missing, install torch (pinned) and headrace[dev] editable
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install '$(TORCH)'
	$(PY) -m pip install -e '.[dev]'

QUICKSTART ?= examples/out
HEADRACE ?= $(VENV)/bin/headrace

demo: ## Run `headrace demo`: train, stream, score, catch drift, retrain, shadow and canary, audit
	$(HEADRACE) demo

quickstart: ## Train an example fraud model, register it, batch-score a file, verify the audit chain
	$(PY) examples/train_fraud.py $(QUICKSTART)
	$(HEADRACE) register $(QUICKSTART)/model.pkl --name fraud --schema $(QUICKSTART)/schema.yaml \
		--data $(QUICKSTART)/train.parquet --metrics $(QUICKSTART)/metrics.json \
		--config $(QUICKSTART)/config.yaml --alias champion
	$(HEADRACE) predict fraud --input $(QUICKSTART)/score.csv --output $(QUICKSTART)/scores.csv
	$(HEADRACE) releases list fraud
	$(HEADRACE) audit verify

fmt: ## Fix lint findings that can be fixed, then format (ruff)
	$(RUFF) check --fix $(LINT_PATHS)
	$(RUFF) format $(LINT_PATHS)

check: ## Lint, format check, mypy --strict, import contracts (runs all, fails if any fail)
	@status=0; \
	echo "--- ruff check"; $(RUFF) check $(LINT_PATHS) || status=1; \
	echo "--- ruff format --check"; $(RUFF) format --check $(LINT_PATHS) || status=1; \
	echo "--- mypy"; $(MYPY) || status=1; \
	echo "--- lint-imports"; $(LINT_IMPORTS) || status=1; \
	exit $$status

test: ## Run the whole test suite (tests/); services skip unless HEADRACE_REQUIRE_SERVICES=1
	$(PYTEST) -q tests $(ARGS)

bench: ## Run every benchmarks/*.py
	@$(if $(BENCHMARKS),,echo "no benchmarks yet")
	@set -e; for bench in $(BENCHMARKS); do echo "--- $$bench"; $(PY) "$$bench"; done
