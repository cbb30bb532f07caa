# Set-up is part of every target: a fresh machine with Python >= 3.11, make and npm needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
# The schemas the deploy tests check the monitoring objects against, installed as
# tests/deploy/schemas/package-lock.json pins them (tests/deploy/schemas/README.md).
DEPLOY_SCHEMAS := .tools/deploy-schemas/node_modules/.package-lock.json
# The Dask operator's CRDs the deploy tests check the DaskCluster against, from the pinned
# dask-kubernetes wheel (its Helm chart's crds/), verified by its sha256.
DASK_KUBERNETES := 2026.3.0
DASK_KUBERNETES_SHA256 := 5cf138e03cb1851063b82b74e9fd4679251238e3867fcae1e3682aada6410728
DASK_CRDS := .tools/dask-crds/daskcluster.yaml
# The Node client example's packages, as examples/node/package-lock.json pins them (docs/clients.md).
NODE_EXAMPLE := examples/node/node_modules/.package-lock.json
PACKAGES := qtmesh agents alpha_reporting backtest console federation market memory meta \
	meta_optimizer replay sesa world_model examples benchmarks
# Compiled numba kernels, cached beside their modules; warmed again when a kernel's source changes.
KERNELS := $(VENV)/.kernels
KERNEL_SOURCES := $(shell grep -rl --include='*.py' 'numba' backtest world_model sesa market)
# Commit that `buf breaking` compares the protos against (CI sets HEAD~1).
BREAKING_AGAINST ?= HEAD
# The browser the console's tests drive: Debian's chromium (never a downloaded one).
CHROMIUM := /usr/bin/chromium
# `make demo DEMO_ARGS=--keep` leaves the mesh running after the demo, for its console.
DEMO_ARGS ?=

.PHONY: bytecode demo test lint architecture types stubs-check buf-lint buf-breaking pytest protos docs lock bench image image-check clean

demo: $(KERNELS) bytecode
	$(BIN)/python -m examples.demo $(DEMO_ARGS)

test: lint architecture types stubs-check buf-lint buf-breaking pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The layers and import rules of docs/architecture.md (contracts in pyproject.toml).
architecture: $(STAMP)
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

stubs-check: $(STAMP)
	$(BIN)/python scripts/generate_protos.py --check

buf-lint: $(BUF)
	$(BUF) lint

buf-breaking: $(BUF)
	BUF=$(BUF) scripts/buf_breaking.sh $(BREAKING_AGAINST)

pytest: $(KERNELS) $(CHROMIUM) $(DEPLOY_SCHEMAS) $(DASK_CRDS) $(NODE_EXAMPLE) bytecode
	$(BIN)/pytest

# The project's modules compiled ahead (the environment may forbid Python to write its cache),
# so each process of a mesh loads bytecode rather than compiling the sources again; only stale
# files are compiled.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 $(PACKAGES) > /dev/null

$(KERNELS): $(STAMP) $(KERNEL_SOURCES) deploy/docker/warm_numba_cache.py
	$(BIN)/python deploy/docker/warm_numba_cache.py
	touch $@

protos: $(STAMP)
	$(BIN)/python scripts/generate_protos.py

# Regenerates docs/configuration.md from the config dataclasses.
docs: $(STAMP)
	$(BIN)/python -m qtmesh settings > docs/configuration.md

bench: $(STAMP)
	$(BIN)/python -m benchmarks.market
	$(BIN)/python -m benchmarks.fleet
	$(BIN)/python -m benchmarks.evaluation
	$(BIN)/python -m benchmarks.evolution
	$(BIN)/python -m benchmarks.noise
	$(BIN)/python -m benchmarks.research
	$(BIN)/python -m benchmarks.world_model
	$(BIN)/python -m benchmarks.memory
	$(BIN)/python -m benchmarks.officers
	$(BIN)/python -m benchmarks.federation
	$(BIN)/python -m benchmarks.subscribers
	$(BIN)/python -m benchmarks.console
	$(BIN)/python -m benchmarks.startup

# The one container image of every service (needs a Docker engine; deploy/README.md).
IMAGE ?= qtmesh:dev
image:
	docker build -f deploy/docker/Dockerfile -t $(IMAGE) .

# Builds the image on a Debian base made here (no registry needed) and runs the market, SESA and
# federation containers on loopback: health, one GeneratePlan, a clean stop (scripts/image_check.sh).
# Needs root; not part of `make test` (it takes minutes: the closing notes have its time).
image-check: $(STAMP)
	bash scripts/image_check.sh

# Re-resolves the pinned versions in constraints.txt from the ranges in pyproject.toml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -e '.[dev]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^qtmesh' > constraints.txt
	rm -rf .lock-venv

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required; set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(CHROMIUM):
	@test "$$(id -u)" = 0 || { echo "the console's browser tests need Debian's chromium: sudo apt-get install chromium" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

$(DEPLOY_SCHEMAS): tests/deploy/schemas/package.json tests/deploy/schemas/package-lock.json
	mkdir -p .tools/deploy-schemas
	cp tests/deploy/schemas/package.json tests/deploy/schemas/package-lock.json .tools/deploy-schemas/
	npm ci --silent --no-audit --no-fund --prefix .tools/deploy-schemas

$(DASK_CRDS): $(STAMP)
	rm -rf .tools/dask-crds && mkdir -p .tools/dask-crds/wheel
	$(BIN)/pip download --quiet --no-deps --dest .tools/dask-crds/wheel dask-kubernetes==$(DASK_KUBERNETES)
	echo "$(DASK_KUBERNETES_SHA256)  .tools/dask-crds/wheel/dask_kubernetes-$(DASK_KUBERNETES)-py3-none-any.whl" | sha256sum -c --quiet
	$(BIN)/python -m zipfile -e .tools/dask-crds/wheel/dask_kubernetes-$(DASK_KUBERNETES)-py3-none-any.whl .tools/dask-crds/wheel/unpacked
	cp .tools/dask-crds/wheel/unpacked/dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds/*.yaml .tools/dask-crds/
	rm -rf .tools/dask-crds/wheel

$(NODE_EXAMPLE): examples/node/package.json examples/node/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix examples/node

clean:
	rm -rf $(VENV) .tools .qtmesh .pytest_cache .ruff_cache .hypothesis *.egg-info
