# The whole workflow: `make run` (the demo on embedded defaults) and `make test` (every test).
# Both install what they need on a fresh machine: the virtualenv, buf, and (via the
# services fixture) Kafka's jars from Maven Central and Debian's redis-server.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .oo/tools
BUF_VERSION := 1.75.0
PLAYWRIGHT_CORE_VERSION := 1.65.1

.PHONY: setup tools run test chaos test-cluster lint bench-produce bench-flow bench-serve clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

$(TOOLS)/node_modules/.bin/buf:
	mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

# The dashboard test drives Debian's chromium with playwright-core (no browser download).
$(TOOLS)/node_modules/playwright-core/package.json:
	mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) playwright-core@$(PLAYWRIGHT_CORE_VERSION)

tools: $(TOOLS)/node_modules/.bin/buf $(TOOLS)/node_modules/playwright-core/package.json
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	@command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq default-jre-headless)
	@command -v mvn >/dev/null || (apt-get update -qq && apt-get install -y -qq maven)
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

run: setup
	$(BIN)/oo-features demo

# `make test` lints first (ruff, format, mypy over every package): CI (.ci/run) calls only
# `make test`, so lint is part of what CI checks.
test: setup tools lint
	PATH="$(CURDIR)/$(TOOLS)/node_modules/.bin:$$PATH" $(BIN)/pytest

# The tests that need a local cluster (marker `cluster`, not in `make test`): the secured
# three-broker Kafka (ADR 0020) and the Redis Cluster (ADR 0021); starts them, ~3-6 min more.
test-cluster: setup tools
	PATH="$(CURDIR)/$(TOOLS)/node_modules/.bin:$$PATH" $(BIN)/pytest -m cluster

# The long fault-injection runs (kill -9, pauses, CPU hogs, outages), beyond CI's time budget.
chaos: setup tools
	PATH="$(CURDIR)/$(TOOLS)/node_modules/.bin:$$PATH" $(BIN)/pytest -m chaos

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	-$(BIN)/oo-features services down
	rm -rf .oo $(VENV)
