# The targets the README and CI run. Each sets up what it needs (virtual environment, packages).
PYTHON ?= python3
# One pinned environment for CI, developers and the Docker image: `make setup` installs the
# project with the locks as pip constraints (docker/lock.py writes them). `LOCK=none` tests the
# newest releases instead, in a virtual environment of its own (README: updating the pins).
LOCK ?= pinned
LOCK_FILES := docker/requirements.lock docker/requirements-test.lock
ifeq ($(LOCK),none)
VENV ?= .venv-newest
CONSTRAINTS :=
else ifeq ($(LOCK),pinned)
VENV ?= .venv
CONSTRAINTS := $(foreach file,$(LOCK_FILES),--constraint $(file))
else
$(error LOCK is `pinned` (default: the versions of $(LOCK_FILES)) or `none` (the newest releases))
endif
BIN := $(VENV)/bin
# The CPU build of torch lies on disk on our development machines; GPU users install their CUDA
# build of torch first (the lock's version, or any torch>=2.4 with LOCK=none), and pip keeps it.
TORCH_SPEC ?= $(shell grep -E '^torch==' docker/requirements.lock)
PYTEST_ARGS ?=
# Two pytest workers: one runs the SLURM tier, then the e2e tier; the other runs the rest of the
# suite while the SLURM tests wait on the scheduler (tests/conftest.py: worker_group).
# `make test PARALLEL=` runs everything in one.
PARALLEL ?= -n 2
export LAUNCHER_LOCK := $(LOCK)

.PHONY: setup smoke test unit lint reference clean cluster cluster-stop cluster-status test-slurm lock

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK_FILES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e ".[test]"
	$(BIN)/python -m pip check
	touch $@

# Rewrite the locks from the newest releases, once the full suite passed on them (README).
lock:
	$(MAKE) test LOCK=none
	.venv-newest/bin/python docker/lock.py
	$(MAKE) test

# The main job: a smoke run of the SFT recipe, offline, on CPU, in runs/sft-mistral-smoke (the run
# directory any `--smoke` run of it gets), started afresh each time.
smoke: setup
	rm -rf runs/sft-mistral-smoke
	HF_HUB_OFFLINE=1 $(BIN)/launcher run recipes/sft-mistral.yaml --smoke

# The full test suite (unit, integration and SLURM tiers), as CI runs it. The local SLURM cluster
# needs root: without it the cluster is not started and the SLURM tests skip, saying why.
# As root the SLURM tier must run, so a cluster that does not start fails `make test`; without
# root the SLURM tests skip, saying why.
test: setup
	if [ "$$(id -u)" = 0 ]; then cluster/devcluster.sh start; else echo "make test: not root, so no local SLURM cluster; the SLURM tests will skip"; fi
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PARALLEL) $(PYTEST_ARGS)

# The in-process tier: no training, no SLURM, no other program started (tests/conftest.py).
unit: setup
	$(BIN)/python -m pytest -q -m "not integration and not slurm and not process" $(PYTEST_ARGS)

test-slurm: setup cluster
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slurm $(PYTEST_ARGS)

# The local development SLURM cluster (cluster/README.md): munge, slurmctld, two slurmd nodes.
cluster:
	cluster/devcluster.sh start

cluster-stop:
	cluster/devcluster.sh stop

cluster-status:
	cluster/devcluster.sh status

lint: setup
	$(BIN)/ruff check launcher tests benchmarks
	$(BIN)/ruff format --check launcher tests benchmarks

reference: setup
	$(BIN)/python -m launcher.recipe.reference README.md

clean:
	rm -rf runs .pytest_cache
