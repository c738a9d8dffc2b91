# Two commands on a fresh machine: `make demo` and `make test`. See README.md.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
KABUTO := $(BIN)/kabuto

export KABUTO_KEY_DIR ?= $(CURDIR)/var/keys
# Test processes (pytest-xdist); 0 runs the suite in this one. Two fill this 2-core machine: three were no faster.
TEST_WORKERS ?= 2

.PHONY: demo test bench setup services venv migrate enrol provision run status watch lint clean chaos asyncapi-parser

demo: setup  ## run the seven agents and the demo scenario
	KABUTO_LOG_LEVEL=$${KABUTO_LOG_LEVEL:-warning} $(KABUTO) demo

test: services venv asyncapi-parser  ## the whole test suite against the real RabbitMQ and PostgreSQL
	$(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

setup: services venv migrate enrol provision

services:
	@bash scripts/services.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The AsyncAPI project's own parser (npm, pinned by package-lock.json) validates `kabuto catalogue` in the tests.
asyncapi-parser: tests/asyncapi/node_modules/.installed

tests/asyncapi/node_modules/.installed: tests/asyncapi/package-lock.json
	cd tests/asyncapi && npm ci --no-audit --no-fund --loglevel=error
	touch $@

migrate: venv
	$(KABUTO) migrate

enrol: venv
	$(KABUTO) ca init
	$(KABUTO) ca enrol-all

# Least privilege (issue 13): a broker user and a database login per agent, made with the
# administrator's URLs; every agent then connects as itself (KABUTO_AGENT_CREDENTIALS=1, the default).
provision: venv
	KABUTO_RABBITMQCTL="$${KABUTO_RABBITMQCTL:-$$(bash scripts/services.sh --rabbitmqctl)}" $(KABUTO) access provision

run: setup  ## run every agent, each its own supervised process, until Ctrl-C
	$(KABUTO) run all

status: venv
	$(KABUTO) status

watch: venv  ## the live per-agent view until Ctrl-C
	$(KABUTO) status --watch

lint: venv
	$(BIN)/ruff check agents broker schemas kabuto_client examples tests bench chaos
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache tests/asyncapi/node_modules

bench: services venv $(VENV)/.bench  ## every figure of issue 8 with its target (docs/performance.md)
	$(BIN)/python -m bench

$(VENV)/.bench: pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

chaos: venv  ## the fault suite on private PostgreSQL and RabbitMQ it starts and stops (not part of `make test`)
	bash scripts/chaos.sh $(CHAOS_ARGS)
