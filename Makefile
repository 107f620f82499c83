# make run   - bootstrap .venv (idempotent) and run the main job on the emulator
# make test  - bootstrap .venv and run every test: lint, unit, integration, molecule
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bootstrapped
SITE := $(VENV)/lib/python3.11/site-packages
TIER ?= aml
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)

# Longest first, so that the last slot to free up is not held by a long scenario.
MOLECULE_SCENARIOS := aml_cluster eval waa_image vm_pool batch_pool acr aci_run acr_pull
MOLECULE_TARGETS := $(addprefix molecule-,$(MOLECULE_SCENARIOS))

.PHONY: bootstrap lock run test lint sanity unit integration molecule benchmark clean browser \
	$(MOLECULE_TARGETS)

bootstrap: $(STAMP)

$(STAMP): pyproject.toml requirements.lock.txt warm_python/warm-python
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the locked set (ansible, azure.azcollection's requirements, the SDKs, the tools), as is
	$(BIN)/pip install --quiet --no-deps --no-compile -r requirements.lock.txt
	$(BIN)/pip install --quiet --no-deps --no-compile -e .
	$(BIN)/pip check
	# Byte-compiled on every core instead of pip's one. Not ansible_collections: Ansible's
	# collection loader compiles collection code from source and never reads a .pyc.
	$(BIN)/python -m compileall -q -j 0 -x '/ansible_collections/' $(SITE)
	# interpreter start-up hook: see localazure/client_hook.py and docs/emulator.md
	echo 'import localazure.client_hook' > $(SITE)/localazure_hook.pth
	# Ansible's module interpreter for localhost (the inventories name it): see warm_python/
	install -m 0755 warm_python/warm-python $(BIN)/warm-python
	touch $@

# Re-resolve the lock from pyproject.toml and azcollection's requirements (needs the network).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet ansible==12.3.0
	.lockenv/bin/pip install --quiet -r .lockenv/lib/python3.11/site-packages/ansible_collections/azure/azcollection/requirements.txt
	.lockenv/bin/pip install --quiet '.[dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^openadapt' > requirements.lock.txt
	rm -rf .lockenv

run: $(STAMP)
	$(BIN)/ansible-playbook site.yml -e tier=$(TIER)

lint: $(STAMP) sanity
	$(NICE) $(BIN)/ruff check .
	$(NICE) $(BIN)/ruff format --check .
	# hosts.yml without the VM pool's azure_rm source: ansible-lint syntax-checks every playbook
	# with ansible-playbook, about a hundred runs, and that plugin costs each 2.5 s of CPU.
	ANSIBLE_INVENTORY=inventories/local/hosts.yml $(NICE) $(BIN)/ansible-lint --profile production

# ansible-test sanity on the collection as ansible-galaxy builds it, installed next to
# azure.azcollection (its dependency) under .sanity/ansible_collections, with this venv's Python
# (--local). ansible-test's own requirement venvs bootstrap pip with tests/sanity/get_pip.py
# when its get-pip download is out of reach (see that file).
SANITY := .sanity
SANITY_COLLECTION := $(SANITY)/ansible_collections/openadapt/azure_eval
GET_PIP_CACHE := $(HOME)/.ansible/test/cache/get_pip_24_2.py
sanity: $(STAMP)
	rm -rf $(SANITY) && mkdir -p $(SANITY)/ansible_collections/azure
	$(BIN)/ansible-galaxy collection build --force --output-path $(SANITY) >/dev/null
	$(BIN)/ansible-galaxy collection install --no-deps --force -p $(SANITY) $(SANITY)/openadapt-azure_eval-*.tar.gz >/dev/null
	ln -s $(abspath $(SITE))/ansible_collections/azure/azcollection $(SANITY)/ansible_collections/azure/azcollection
	test -f $(GET_PIP_CACHE) || install -D -m 0644 tests/sanity/get_pip.py $(GET_PIP_CACHE)
	cd $(SANITY_COLLECTION) && git init -q && git add -A && \
	  git -c user.name=sanity -c user.email=sanity@localhost commit -qm sanity && \
	  $(NICE) $(abspath $(BIN))/ansible-test sanity --python 3.11 --local --color no

unit: $(STAMP)
	$(NICE) $(BIN)/pytest tests/unit -q

# The dashboard's browser test drives Debian's chromium through chromium-driver: installed here
# when they are missing and this runs as root (CI on a clean machine); otherwise a notice.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "chromium and chromium-driver are missing: apt-get install chromium chromium-driver"; fi

# browser is installed inside integration's own job slot, beside the tests: as a prerequisite its
# slot would go to a molecule scenario, and before the tests the longest suite would wait a
# minute or two for apt. The one test that drives chromium waits for BROWSER_INSTALL_STATUS (the
# install's exit code) and fails with its log when the install failed.
BROWSER_STATUS := .state/browser-install
integration: $(STAMP)
	@mkdir -p .state && rm -f $(BROWSER_STATUS).rc
	@( $(MAKE) --no-print-directory browser > $(BROWSER_STATUS).log 2>&1; \
	  echo $$? > $(BROWSER_STATUS).rc.tmp && mv $(BROWSER_STATUS).rc.tmp $(BROWSER_STATUS).rc ) &
	# Four workers, each with its own emulators; a file's tests stay together (they share
	# fixtures), the longest files first (tests/integration/conftest.py). Most of a test's time
	# is simulated Azure waiting, so four fit on two cores.
	BROWSER_INSTALL_STATUS=$(abspath $(BROWSER_STATUS)) \
	  $(BIN)/pytest tests/integration -q -n 4 --dist loadfile --no-loadscope-reorder --durations=30

# One target a scenario, so that `make -j` runs them side by side: each has an emulator on a port
# and a state directory of its own (its molecule.yml). Molecule keeps a scenario's state
# (prepared, converged) under ~/.ansible/tmp, outside the checkout: reset first, so that every
# run prepares from scratch.
molecule: $(MOLECULE_TARGETS)

$(MOLECULE_TARGETS): molecule-%: $(STAMP)
	cd roles/$* && ../../$(BIN)/molecule reset -s $* && $(NICE) ../../$(BIN)/molecule test -s $*

# The suites are independent: integration (the long one, four pytest workers) and the molecule
# scenarios start first, lint and unit follow as slots free up; each suite's output is printed
# whole when it ends. Most of their time is spent waiting on simulated Azure, so four make jobs
# keep the 2-core machine busy without starving the timing-aware tests. Integration sets the
# length of the run: the other suites run at a lower CPU priority (NICE), in its idle time, and
# end well before it.
TEST_JOBS ?= 4
test: $(STAMP)
	$(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target NICE="nice -n 5" \
	  integration molecule lint unit

benchmark: $(STAMP)
	$(BIN)/python benchmarks/scheduling.py
	$(BIN)/python benchmarks/batch_preload.py

clean:
	-$(BIN)/python -m localazure stop
	rm -rf .state reports
