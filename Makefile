# Jobplane — the two commands of the README's quick start, and a few helpers.
#
#   make run    create .venv, install, run standalone (SQLite, in-process queue) on :8080
#   make test   create .venv, install test deps, make sure PostgreSQL, Redis and bubblewrap
#               are there (using running ones, starting installed ones, or installing them),
#               then run the whole test suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test venv test-deps services bench clean

run: $(VENV)/.installed
	$(BIN)/jobplane standalone

test: $(VENV)/.installed-test
	@bash scripts/ensure-test-services.sh
	@. ./.test-services.env && $(BIN)/python -m pytest $(PYTEST_ARGS)

$(VENV)/bin/python:
	@bash scripts/make-venv.sh "$(PYTHON)" "$(VENV)"

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/bin/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@ $(VENV)/.installed

bench: $(VENV)/.installed-test
	@bash scripts/ensure-test-services.sh
	@. ./.test-services.env && $(BIN)/python bench/fire_lag.py

clean:
	rm -rf $(VENV) var .pytest_cache .test-services.env
