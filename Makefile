# Two commands matter: `make demo` (main job on the embedded FHIR server) and `make test` (whole suite).
# Both build .venv themselves from requirements.lock; only python3 (3.11+) and make are needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
PATIENTS ?= 300
SEED ?= 42

.PHONY: install demo test test-fast dev lint typecheck lock clean server

install: $(STAMP)

# uv is installed into .venv by pip (so no global install is needed), then installs the lock file.
$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5,<1"
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@mkdir -p $(DAGSTER_HOME) && touch $(STAMP)

# Start the embedded FHIR server, load synthetic clinic data, run the main job, print a summary.
demo: install
	$(PY) -m demo.run_demo --patients $(PATIENTS) --seed $(SEED)

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

# Dagster UI against the demo warehouse (start `make server` first for live pulls).
dev: install
	$(VENV)/bin/dagster dev -m pipelines.definitions -h 127.0.0.1 -p 3000

server: install
	$(PY) -m demo.server --port 8090 --data-dir data/fhir-server

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy pipelines assets fhir_mappings quality_checks demo

# Re-resolve the lock file after changing pyproject.toml.
lock:
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra demo -q -o requirements.lock

clean:
	rm -rf data reports .dagster_home/storage .dagster_home/history .dagster_home/schedules .dagster_home/logs
