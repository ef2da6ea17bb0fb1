# kv-sync developer commands. Every target creates the virtualenv it needs;
# nothing depends on packages installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv lint typecheck unit integration test demo build bench clean checkov terraform-check tf-provider

help:
	@echo "make demo   - run a real end-to-end sync on local emulators"
	@echo "make test   - lint, type-check and run every test"
	@echo "make build  - build the Lambda deployment zip (build_lambda.sh)"
	@echo "make bench  - run the benchmarks"

# The reader library (reader/) is installed as its users install it; tests and
# benchmarks import it from the source tree all the same.
$(STAMP): requirements.txt requirements-dev.txt reader/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet ./reader
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

test: lint typecheck checkov terraform-check tf-provider $(STAMP)
	@mirror=$$(cat $(TF_MIRROR_FILE)) && \
	if [ -n "$$mirror" ]; then \
	  export KV_SYNC_TF_PROVIDER_MIRROR="$$mirror"; \
	  echo "KV_SYNC_TF_PROVIDER_MIRROR=$$mirror $(PY) -m pytest"; \
	else echo "$(PY) -m pytest"; fi && \
	$(PY) -m pytest

# checkov lives in its own virtualenv: it pins an older boto3 than the project's.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov --directory terraform --framework terraform --quiet --compact --skip-download

# Where Terraform gets hashicorp/aws, decided once per make run (only for the targets
# that run Terraform) by scripts/tf_mirror.py: the mirror in KV_SYNC_TF_PROVIDER_MIRROR
# when set; else the registry when it answers; else an offline mirror found in the
# usual places; else it fails with one line saying what to install or set. The mirror
# (empty for the registry) goes to TF_MIRROR_FILE, its CLI config to TF_CLI_CONFIG.
TF_PROVIDER_DIR := build/terraform-provider
TF_MIRROR_FILE := $(TF_PROVIDER_DIR)/mirror
TF_CLI_CONFIG := $(TF_PROVIDER_DIR)/cli.tfrc

tf-provider:
	@command -v terraform >/dev/null || { echo "terraform: terraform CLI not found on PATH (install Terraform >= 1.5)" >&2; exit 1; }
	@mkdir -p $(TF_PROVIDER_DIR) && rm -f $(TF_MIRROR_FILE) $(TF_CLI_CONFIG) && \
	$(PYTHON) scripts/tf_mirror.py --write-cli-config $(TF_CLI_CONFIG) >$(TF_MIRROR_FILE).tmp && \
	mv $(TF_MIRROR_FILE).tmp $(TF_MIRROR_FILE) || { rm -f $(TF_MIRROR_FILE).tmp; exit 1; }

# fmt + validate. validate needs `init`: it runs in a temporary copy (so terraform/
# gets no .terraform/), from the provider mirror tf-provider chose, if any.
terraform-check: tf-provider
	terraform fmt -check -recursive terraform
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cp terraform/*.tf "$$tmp"/ && \
	if [ -n "$$(cat $(TF_MIRROR_FILE))" ]; then \
	  export TF_CLI_CONFIG_FILE="$(CURDIR)/$(TF_CLI_CONFIG)"; \
	fi && \
	terraform -chdir="$$tmp" init -backend=false -input=false -no-color >"$$tmp/init.log" 2>&1 || { cat "$$tmp/init.log" >&2; exit 1; }; \
	terraform -chdir="$$tmp" validate -no-color

demo: $(STAMP)
	$(PY) -m local.demo

build:
	./build_lambda.sh

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist lambda_function.zip .pytest_cache .mypy_cache .ruff_cache
