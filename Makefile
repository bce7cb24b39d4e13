# The targets the README and CI run. Each sets up what it needs (virtual environment, packages).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on disk on our development machines; GPU users install their CUDA
# build of torch first (any torch>=2.4), and pip keeps it.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup smoke test unit lint reference clean cluster cluster-stop cluster-status test-slurm

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# The main job: a smoke run of the SFT recipe, offline, on CPU.
smoke: setup
	rm -rf runs/smoke-sft-mistral
	HF_HUB_OFFLINE=1 $(BIN)/launcher run recipes/sft-mistral.yaml --smoke --run-dir runs/smoke-sft-mistral

# The full test suite (unit, integration and SLURM tiers), as CI runs it. The local SLURM cluster
# needs root: without it the cluster is not started and the SLURM tests skip, saying why.
test: setup
	cluster/devcluster.sh start || echo "make test: no local SLURM cluster (see above); SLURM tests will skip"
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

unit: setup
	$(BIN)/python -m pytest -q -m "not integration and not slurm" $(PYTEST_ARGS)

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
