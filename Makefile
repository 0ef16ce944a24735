# buildfarm: `make run` starts a farm and runs a demo build; `make test` installs and tests.
SHELL := /bin/sh
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: run test deps venv images bench chaos clean lint

run: deps venv images
	$(BIN)/python scripts/demo.py --port $(PORT)

test: deps venv images
	$(BIN)/pytest -q --durations=15

bench: deps venv images
	$(BIN)/python -m bench

# Faults injected during real builds; prints lost / run twice / stuck / recovery per fault. Then the
# API fuzz run with its full count of examples (`make test` runs BUILDFARM_FUZZ=quick).
chaos: deps venv images
	$(BIN)/python -m bench --chaos
	$(BIN)/python -m bench.failover
	BUILDFARM_FUZZ=full $(BIN)/pytest -q tests/test_api_fuzz.py

deps:
	@scripts/deps.sh

# The virtualenv is rebuilt only when its inputs change. pymesos goes first: its http-parser
# dependency needs a rebuild on Python 3.11 (see scripts/install-pymesos.sh).
venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml scripts/install-pymesos.sh
	$(PYTHON) -m venv $(VENV)
	scripts/install-pymesos.sh $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

images: deps
	@images/build.sh

lint: venv
	$(BIN)/python -m compileall -q buildfarm executors tests bench

clean:
	rm -rf $(VENV) .pytest_cache
