# The two commands of the README: `make devnet` and `make test`.
# Each creates or refreshes .venv from this repository's own files, then runs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVNET_DIR ?= devnet
DEVNET_ARGS ?=
# Test workers (pytest-xdist): `auto` = one per core; `make test JOBS=0` runs in one process.
JOBS ?= auto
# `make flake-hunt`: runs of every live test, and extra arguments for tests/flake_hunt.py.
N ?= 20
FLAKE_ARGS ?=

.PHONY: all venv test lint bench devnet flake-hunt mutants clean fuzz fuzz-smoke

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

# In file order (-p no:randomly): a red run replays as it ran. `make flake-hunt` shuffles.
test: $(STAMP)
	$(BIN)/python -m pytest -p no:randomly -n $(JOBS) --dist worksteal $(PYTEST_ARGS)

# Mutation testing of the consensus rules (tests/mutants.py): each named rule mutation must be
# killed by the default simulator campaign. `MUTANTS_ARGS="--mutant NAME"` runs one.
mutants: $(STAMP)
	$(BIN)/python tests/mutants.py --jobs $(if $(filter auto,$(JOBS)),$(shell nproc),$(JOBS)) $(MUTANTS_ARGS)

flake-hunt: $(STAMP)
	$(BIN)/python tests/flake_hunt.py --runs $(N) --jobs $(JOBS) $(FLAKE_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check coalitiond tests benchmarks fuzz
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

devnet: $(STAMP)
	$(BIN)/coalitiond devnet --members 5 --component feed --dir $(DEVNET_DIR) $(DEVNET_ARGS)

# Coverage-guided fuzzing (atheris) of every decoder of outside bytes (fuzz/targets.py), one
# harness at a time. `fuzz-smoke`: 2 s each, about a minute in all (CI); `fuzz`: the long
# campaign, FUZZ_SECONDS per harness; `FUZZ_ARGS="--harness cbor --work DIR"` narrows it.
FUZZ_SECONDS ?= 300
FUZZ_ARGS ?=
fuzz-smoke: $(STAMP)
	$(BIN)/python -m fuzz.campaign --seconds 2 $(FUZZ_ARGS)

fuzz: $(STAMP)
	$(BIN)/python -m fuzz.campaign --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) $(DEVNET_DIR) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
