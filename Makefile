# make run   - bootstrap .venv (idempotent) and run the main job on the emulator
# make test  - bootstrap .venv and run every test: lint, unit, integration, molecule
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bootstrapped
AZCOLL_REQS := $(VENV)/lib/python3.11/site-packages/ansible_collections/azure/azcollection/requirements.txt
SITE := $(VENV)/lib/python3.11/site-packages
TIER ?= aml
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)

.PHONY: bootstrap run test lint unit integration molecule benchmark clean

bootstrap: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# ansible first: azure.azcollection ships inside it, with its own Python requirements
	$(BIN)/pip install --quiet -c constraints.txt ansible==12.3.0
	$(BIN)/pip install --quiet -c constraints.txt -r $(AZCOLL_REQS) -e '.[dev]'
	# interpreter start-up hook: see localazure/client_hook.py and docs/emulator.md
	echo 'import localazure.client_hook' > $(SITE)/localazure_hook.pth
	touch $@

run: $(STAMP)
	$(BIN)/ansible-playbook site.yml -e tier=$(TIER)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint --profile production

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

molecule: $(STAMP)
	cd roles/acr && ../../$(BIN)/molecule test
	cd roles/acr_pull && ../../$(BIN)/molecule test

test: lint unit integration molecule

benchmark: $(STAMP)
	$(BIN)/python benchmarks/scheduling.py

clean:
	-$(BIN)/python -m localazure stop
	rm -rf .state reports
