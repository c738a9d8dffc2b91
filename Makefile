# Two commands on a fresh machine: `make demo` and `make test`. See README.md.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
KABUTO := $(BIN)/kabuto

export KABUTO_KEY_DIR ?= $(CURDIR)/var/keys

.PHONY: demo test bench setup services venv migrate enrol run status lint clean

demo: setup  ## run the seven agents and the demo scenario
	KABUTO_LOG_LEVEL=$${KABUTO_LOG_LEVEL:-warning} $(KABUTO) demo

test: services venv  ## the whole test suite against the real RabbitMQ and PostgreSQL
	$(BIN)/pytest $(PYTEST_ARGS)

setup: services venv migrate enrol

services:
	@bash scripts/services.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

migrate: venv
	$(KABUTO) migrate

enrol: venv
	$(KABUTO) ca init
	$(KABUTO) ca enrol-all

run: setup  ## run every agent, each its own supervised process, until Ctrl-C
	$(KABUTO) run all

status: venv
	$(KABUTO) status

lint: venv
	$(BIN)/ruff check agents broker schemas tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

bench: services venv $(VENV)/.bench  ## every figure of issue 8 with its target (docs/performance.md)
	$(BIN)/python -m bench

$(VENV)/.bench: pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@
