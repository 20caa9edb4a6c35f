# Two commands on a fresh machine: `make run` and `make test`. Everything installs into .venv
# from this project's own pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run worker serve test test-python test-ts lint unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,media,bench]'
	touch $(STAMP)

install: $(STAMP)

# The main job on embedded defaults: the HTTP service on 127.0.0.1:8000 with an in-process worker,
# SQLite and local storage under ./.mediacache, the Redis that REDIS_* names or, when none answers
# on 127.0.0.1:6379, an embedded Valkey.
run: install
	$(BIN)/mediacache serve

worker: install
	$(BIN)/mediacache worker

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: lint test-python test-ts

# Node BullMQ for the interop tests (tests/interop/package-lock.json). Outside CI a machine without
# npm or a registry skips those tests; in CI the failed install fails the run.
test-python: install
	@if [ ! -f tests/interop/node_modules/bullmq/package.json ]; then \
	  (cd tests/interop && npm ci --no-audit --no-fund --silent) || [ -z "$$CI" ]; fi
	$(BIN)/pytest -n 3 --durations=25

# The TypeScript client's suite runs against a real `mediacache serve` from this checkout's venv.
test-ts: install
	cd clients/typescript && npm ci --no-audit --no-fund --silent && MEDIACACHE_PYTHON=$(abspath $(BIN))/python npm test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/interop/node_modules clients/typescript/node_modules clients/typescript/dist clients/typescript/build-test
