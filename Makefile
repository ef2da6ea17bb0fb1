# kv-sync developer commands. Every target creates the virtualenv it needs;
# nothing depends on packages installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv lint typecheck unit integration test demo build bench clean

help:
	@echo "make demo   - run a real end-to-end sync on local emulators"
	@echo "make test   - lint, type-check and run every test"
	@echo "make build  - build the Lambda deployment zip (build_lambda.sh)"
	@echo "make bench  - run the benchmarks"

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

test: lint typecheck $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) -m local.demo

build:
	./build_lambda.sh

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist lambda_function.zip .pytest_cache .mypy_cache .ruff_cache
