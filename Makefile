# The two commands of the README: `make demo` and `make test`. Both create the environment
# (.venv, with the embedded broker and the test tools) on first use; `make test` also installs and
# starts what the tests need (scripts/test-services: Mosquitto, Prometheus, Alertmanager, ...).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint env evaluate chaos clean

$(BIN)/telemon: pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || scripts/apt-install python3-venv
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
	scripts/test-services scripts/chaos $(CHAOS_ARGS)

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# numba invalidates a cached kernel when its own file changes, not when a function it calls does:
# the tests compile every kernel from the sources at hand.
test: lint
	find monitor -name '*.nb[ci]' -delete
	scripts/test-services $(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .telemon evaluation
