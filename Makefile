# Set-up and entry points. A fresh machine needs Python 3.11 and make; everything else is installed here.
PYTHON ?= python3.11
VENV := .venv
UV_VERSION := 0.13.9
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: demo test lint install clean-lake

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## Main job end to end on the embedded default (sample data, SQLite Dagster instance)
demo: install
	$(VENV)/bin/qmachina demo

## The test suite (CI runs this with QMACHINA_REQUIRE_SERVICES=1)
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/qmachina validate-configs
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .

clean-lake:
	rm -rf lake/raw lake/bronze lake/staging dagster_home/storage dagster_home/history dagster_home/schedules
