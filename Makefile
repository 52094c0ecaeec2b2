# Two commands are all the set-up: `make demo` and `make test`.
# The first Python 3.11+ on PATH. Silent when a version is missing, including
# version-manager shims (pyenv) that exist on PATH but print errors when run.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { command -v $$p; break; }; done 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
# The demo's store; the README tour uses the same one (`export WHENFLOW_HOME=$PWD/.whenflow`).
export WHENFLOW_HOME ?= $(CURDIR)/.whenflow

.PHONY: demo test lint types contracts unit bench bench-api bench-s3 clean which-python

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
	@echo "stored in $(WHENFLOW_HOME); to inspect it: export WHENFLOW_HOME=$(WHENFLOW_HOME)"

which-python:
	@echo "$(PYTHON)"

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

# `whenflow server` through its API: starts/s, start-to-completed latency, 1,000 waiting
# executions. BENCH_ARGS passes options, e.g. `make bench-api BENCH_ARGS="--quick --store postgresql"`.
bench-api: $(VENV)/.installed
	$(BIN)/python benchmarks/api.py $(BENCH_ARGS)

# A 200 MiB file between two nodes through S3 (moto on loopback): MB/s and peak RSS.
bench-s3: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/artifacts_s3.py

clean:
	rm -rf $(VENV) .whenflow .mypy_cache .ruff_cache .pytest_cache
