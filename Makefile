# Set-up and entry points. A fresh machine needs Python 3.11 and make; everything else is installed here.
PYTHON ?= python3.11
VENV := .venv
UV_VERSION := 0.13.9
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: live-demo demo test lint install web-install web-build browser clean-lake

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The browser client (web/): npm ci from the committed lockfile, redone only when node_modules is missing
# (the stamp lives inside it) or package.json / package-lock.json changed.
WEB_STAMP := web/node_modules/.installed
$(WEB_STAMP): web/package.json web/package-lock.json
	npm --prefix web ci --no-audit --no-fund
	touch $@

web-install: $(WEB_STAMP)

## Static build of the browser client into web/dist/ (served by the Python serving process)
web-build: web-install
	npm --prefix web run build

## Debian's Chromium for the browser end-to-end tests (tests/web/test_web_e2e.py drives it with playwright-core)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

## Main job end to end on the embedded default (sample data, SQLite Dagster instance); builds the web client
demo: install web-build
	$(VENV)/bin/qmachina demo

## Live demo: loopback gateway (the real sample at real time) + qmachina live + qmachina serve (after `make demo`)
live-demo: install web-build
	$(VENV)/bin/qmachina live demo

## The test suite (CI runs this with QMACHINA_REQUIRE_SERVICES=1). Two pytest-xdist workers, one test file per
## worker (module fixtures such as a `dagster dev` start once); most long tests wait on subprocesses.
PYTEST_WORKERS ?= 2
test: install web-build browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/qmachina validate-configs
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadfile
	npm --prefix web test

lint: install
	$(VENV)/bin/ruff check .

clean-lake:
	rm -rf lake/raw lake/bronze lake/staging dagster_home/storage dagster_home/history dagster_home/schedules
