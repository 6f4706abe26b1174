# The two set-up commands of the README: `make demo` and `make test`. Both create the environment
# (.venv with '.[dev]': the embedded and mqtt extras, the test tools) on first use; `make test` also
# installs and starts what the tests need (scripts/test-services: Mosquitto, Prometheus, Alertmanager, ...).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-quick lint docs env evaluate chaos clean report-screenshot

$(BIN)/telemon: pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || scripts/apt-install python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

env: $(BIN)/telemon

demo: env
	$(BIN)/telemon demo

# Reproduces the detection-quality tables (docs/results/detection-quality.md): telemon beside the two
# baselines (a static 3-sigma rule and River's HalfSpaceTrees, per channel) on the simulator library, NAB,
# the Astro Pi log, UCI HAPT and UCI Occupancy. Reads the data from $(DATA) (never copied), writes
# evaluation/: the JSON reports, row tables, NAB results, the HAPT experiments joined into CSVs (hapt/),
# and tables.md, which it prints and also writes to docs/results/detection-tables.md (the page includes
# it). About 4 minutes of CPU time.
DATA ?= ../shared/data
EVAL := $(BIN)/telemon evaluate
ASTRO_AXES := --value temp_h=temperature --value humidity --value pressure \
	--value mag_x=magnetometer.x --value mag_y=magnetometer.y --value mag_z=magnetometer.z \
	--value accel_x=accelerometer.x --value accel_y=accelerometer.y --value accel_z=accelerometer.z \
	--value gyro_x=gyroscope.x --value gyro_y=gyroscope.y --value gyro_z=gyroscope.z
# The log's known events (docs/results/detection-quality.md, "The data sets"): the board moved twice (turned at 09:02:21, tilted at
# 10:37:50: its gyroscope shows both) and its new orientation after the recording gap; each the hour from its
# first reading, while the models settle.
ASTRO_EVENTS := --event moved=2015-08-21T09:02:21/2015-08-21T10:02:21 \
	--event moved=2015-08-21T10:37:50/2015-08-21T11:37:50 \
	--event orientation=2015-08-21T22:48:10/2015-08-21T23:48:10
HAPT_AXES := --value acc_x=accelerometer.x --value acc_y=accelerometer.y --value acc_z=accelerometer.z \
	--value gyro_x=gyroscope.x --value gyro_y=gyroscope.y --value gyro_z=gyroscope.z
OCCUPANCY := $(DATA)/occupancy/datatraining.txt $(DATA)/occupancy/datatest.txt $(DATA)/occupancy/datatest2.txt

evaluate: env
	$(EVAL) scenario configs/scenarios/library.yaml --baselines
	$(EVAL) scenario configs/scenarios/clean.yaml
	$(EVAL) --config configs/nab.yaml nab --root $(DATA)/nab --baselines
	$(EVAL) --out evaluation/default nab --root $(DATA)/nab
	$(EVAL) csv $(DATA)/astropi/astro_pi_data_20150824_085954.csv --name astropi --timestamp time_stamp \
		$(ASTRO_AXES) $(ASTRO_EVENTS) --baselines
	$(BIN)/python -m monitor.evaluation.hapt $(DATA)/hapt/RawData evaluation/hapt
	$(EVAL) csv evaluation/hapt/*.csv --name hapt --period-s 0.02 $(HAPT_AXES) \
		--label activity --label-kind change --horizon-s 5 --baselines
	$(EVAL) csv $(OCCUPANCY) --name occupancy --timestamp date \
		--columns row,date,Temperature,Humidity,Light,CO2,HumidityRatio,Occupancy \
		--value Temperature=temperature --value Humidity=humidity --value Light --value CO2 \
		--label Occupancy --label-kind change --horizon-s 3600 --baselines
	$(EVAL) tables --docs docs/results/detection-tables.md

# The screenshot of the demo's report (docs/report.png, in the README and the docs), taken in
# headless Chromium.
report-screenshot: env
	command -v chromium >/dev/null || scripts/apt-install --no-install-recommends chromium fonts-dejavu-core
	$(BIN)/python scripts/report-screenshot docs/report.png

# The chaos harness, long variants (several minutes; prints the figures): CHAOS_ARGS="--outage 30".
chaos: env
	scripts/test-services scripts/chaos $(CHAOS_ARGS)

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The documentation site (mkdocs.yml -> build/site), strict: a broken link or anchor, a page left out
# of the nav or a docstring mkdocstrings cannot read fails it. Silent unless it fails (mkdocs'
# --quiet would hide the very warnings strict mode counts). The reference pages it includes are
# generated: `$(BIN)/python scripts/docs-reference` (tests/unit/test_docs_reference.py checks them).
docs: env
	@out=$$(NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict 2>&1) || { printf '%s\n' "$$out"; exit 1; }

# numba invalidates a cached kernel when its own file changes, not when a function it calls does:
# the tests compile every kernel from the sources at hand.
test: lint docs
	find monitor -name '*.nb[ci]' -delete
	scripts/test-services $(BIN)/pytest

# A quick subset: the unit tests and the integration tests marked `quick`, against the embedded
# broker (TEST_BROKER=embedded, tests/brokers.py) instead of Apache Kafka; no lint, kernel caches kept.
test-quick: env
	TEST_BROKER=embedded scripts/test-services $(BIN)/pytest -m 'quick or not integration'

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .telemon evaluation
