# `make help` lists the targets. `make run` and `make test` are all a fresh clone needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Offline machines would otherwise start (and wait on) an analytics upload with every dvc command.
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup run test test-fast lint

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv with the pinned versions of requirements.lock

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	touch $@

run: setup  ## run the pipeline (dvc repro): only the stages whose inputs changed
	dvc repro

# Two workers, each taking whole files (module fixtures are built once), longest file first (tests/conftest.py).
test: setup  ## run the test suite (what CI runs)
	python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# The slow tier (DVC, stages in subprocesses, training) left out: tests/conftest.py says how tests are marked.
# One process: the fast tests are milliseconds each, and each xdist worker would import TensorFlow again.
test-fast: setup  ## the fast tests, in seconds: unit tests and one in-process run of the stages
	python -m pytest -m "not slow"

lint: setup  ## ruff lint + format check
	ruff check . && ruff format --check .
