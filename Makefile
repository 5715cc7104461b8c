# The two commands of the README: `make devnet` and `make test`.
# Each creates or refreshes .venv from this repository's own files, then runs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVNET_DIR ?= devnet
DEVNET_ARGS ?=

.PHONY: all venv test lint bench devnet clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check coalitiond tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

devnet: $(STAMP)
	$(BIN)/coalitiond devnet --members 5 --component feed --dir $(DEVNET_DIR) $(DEVNET_ARGS)

clean:
	rm -rf $(VENV) $(DEVNET_DIR) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
