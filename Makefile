# The two commands that set up a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint format system-deps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[tensorflow,test]"
	@touch $@

## Train a small model with 1 ps + 2 workers + a chief on local processes, with live progress.
demo: $(STAMP)
	$(PY) -m tfk8s_jupyter.demo

## Everything CI runs: lint, then every test tier.
test: $(STAMP) system-deps lint
	$(PY) -m pytest -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## System packages the browser tests need (Debian chromium); installed once, as root.
system-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make test needs Debian's chromium for the browser tests: run 'sudo apt-get install -y chromium'"; exit 1; fi; }
	@command -v node >/dev/null || { echo "make test needs Node.js >= 20.19 to build the JupyterLab extension: install nodejs"; exit 1; }

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
