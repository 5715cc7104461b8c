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

.PHONY: all venv test lint bench devnet flake-hunt mutants clean tools contracts
.PHONY: system-deps promtool-deps promtool system-test

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

# Pinned node tools (contracts/package.json + package-lock.json): anvil, the local EVM chain of
# the anchor tests and `devnet --anchor evm`, and solc-js, which compiles contracts/. Installed
# into .tools/node_modules by `npm ci` (the anvil binary ships inside its npm package). Without
# npm the anvil tests skip, except in CI (CI=true), where that is an error.
TOOLS       := .tools
TOOLS_STAMP := $(TOOLS)/node_modules/.installed
$(TOOLS_STAMP): contracts/package.json contracts/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  mkdir -p $(TOOLS) && cp contracts/package.json contracts/package-lock.json $(TOOLS)/ && \
	  cd $(TOOLS) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	elif [ "$${CI:-}" = true ]; then \
	  echo "npm not found: CI needs it for anvil and solc-js (contracts/package.json)" >&2; exit 1; \
	else echo "npm not found: the anvil tests and the contract compile check will skip" >&2; fi

tools: $(TOOLS_STAMP)

# Recompile contracts/ChronicleAnchors.sol into the checked-in artifact (pinned solc-js).
contracts: $(TOOLS_STAMP)
	NODE_PATH=$(TOOLS)/node_modules node contracts/compile.js

# In file order (-p no:randomly): a red run replays as it ran. `make flake-hunt` shuffles.
test: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/python -m pytest -p no:randomly -n $(JOBS) --dist worksteal $(PYTEST_ARGS)

# Mutation testing of the consensus rules (tests/mutants.py): each named rule mutation must be
# killed by the default simulator campaign. `MUTANTS_ARGS="--mutant NAME"` runs one.
mutants: $(STAMP)
	$(BIN)/python tests/mutants.py --jobs $(if $(filter auto,$(JOBS)),$(shell nproc),$(JOBS)) $(MUTANTS_ARGS)

flake-hunt: $(STAMP)
	$(BIN)/python tests/flake_hunt.py --runs $(N) --jobs $(JOBS) $(FLAKE_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check coalitiond tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

devnet: $(STAMP)
	$(BIN)/coalitiond devnet --members 5 --component feed --dir $(DEVNET_DIR) $(DEVNET_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) $(DEVNET_DIR) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info

# --- Operators' surface (docs/operations.md, docs/testing.md "System test") ----------------
# Debian packages: rootful podman (runc: crun refuses these hosts' hybrid cgroups), mmdebstrap
# for the image's base (no container registry is reachable), systemd-nspawn, and promtool.
# Installed with apt-get (root) only when missing: re-running is a no-op.
SYSTEM_PACKAGES := podman runc netavark slirp4netns uidmap fuse-overlayfs mmdebstrap \
                   systemd-container prometheus
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed \
	    || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi
endef

system-deps:
	$(call apt_install,$(SYSTEM_PACKAGES))

promtool-deps:
	$(call apt_install,prometheus)

# Prometheus' own checks of deploy/prometheus: syntax, the compose scrape config, and the
# rules' unit tests (every alert fires on its series and stays quiet on a healthy member).
promtool: promtool-deps
	promtool check rules deploy/prometheus/rules.yaml deploy/prometheus/alerts.yaml
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/tests/alerts_test.yaml

# Builds the image from the Dockerfile, runs a 4-member committee in containers, boots the
# systemd unit under systemd-nspawn (tests/system/run.sh; about 4 minutes on 2 cores).
system-test: $(STAMP) system-deps
	bash tests/system/run.sh
