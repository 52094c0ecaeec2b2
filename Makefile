# Two commands are all the set-up: `make demo` and `make test`.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
export WHENFLOW_HOME ?= $(CURDIR)/.whenflow

.PHONY: demo test lint types contracts unit bench clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "whenflow needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/whenflow run examples/feature_engineering.yaml -i start_date=2024-01-01 -i end_date=2024-01-31

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(VENV)/.installed-dev
	$(BIN)/mypy

contracts: $(VENV)/.installed-dev
	$(BIN)/lint-imports

test: lint types contracts
	$(BIN)/pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .whenflow .mypy_cache .ruff_cache .pytest_cache
