# The two commands of the README: `make demo` and `make test`. Both create the environment
# (.venv, with the embedded broker and the test tools) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint env evaluate chaos clean

$(BIN)/telemon: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

env: $(BIN)/telemon

demo: env
	$(BIN)/telemon demo

# Reproduces the README's detection-quality tables (writes evaluation/: JSON reports, NAB results).
evaluate: env
	$(BIN)/telemon evaluate scenario configs/scenarios/library.yaml configs/scenarios/clean.yaml
	$(BIN)/telemon evaluate --config configs/nab.yaml nab

# The chaos harness, long variants (several minutes; prints the figures): CHAOS_ARGS="--outage 30".
chaos: env
	scripts/chaos $(CHAOS_ARGS)

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .telemon evaluation
