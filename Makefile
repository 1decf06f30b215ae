# The only entry points people type. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
# Test images: built locally by default; name pullable images to use your own.
DEBIAN12_IMAGE ?= bundle-debian:12
DEBIAN13_IMAGE ?= bundle-debian:13
# Every scenario, fastest first; `make test SCENARIO=rabbitmq` runs one.
SCENARIOS ?= rabbitmq django celery stack
SCENARIO ?= $(SCENARIOS)

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DEBIAN12_IMAGE DEBIAN13_IMAGE
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help setup engine images lint test bench soak demo demo-down clean

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements.yml
	@$(PYTHON) -m venv $(VENV) || { echo "Cannot create a virtualenv with $(PYTHON): install python3-venv." >&2; exit 1; }
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/ansible-galaxy collection install -r requirements.yml
	@touch $@

setup: $(VENV)/.installed engine images ## Install the toolchain, a Docker engine and the base images

engine:
	@scripts/ensure-docker-engine.sh

images: engine
	@scripts/build-base-image.sh 12 $(DEBIAN12_IMAGE)
	@scripts/build-base-image.sh 13 $(DEBIAN13_IMAGE)

lint: $(VENV)/.installed ## yamllint, ansible-lint (production profile), role READMEs against their argument specs, no repeated blocks
	yamllint --strict .
	ansible-lint
	python scripts/check-role-docs.py
	python scripts/check-repeats.py

# Lint and the inventories' checks need no container: they run beside the
# scenarios (while the first containers are made and converged), and their
# results are printed after the scenarios' summary; any failure fails the run.
test: setup ## Run every test: lint and the inventories' checks beside each Molecule scenario
	@lint=$$(mktemp); checks=$$(mktemp); \
	$(MAKE) --no-print-directory lint >"$$lint" 2>&1 & lint_pid=$$!; \
	python -m pytest -q tests >"$$checks" 2>&1 & checks_pid=$$!; \
	scripts/run-scenarios.sh $(SCENARIO); scenarios=$$?; \
	wait $$lint_pid; lint_rc=$$?; wait $$checks_pid; checks_rc=$$?; \
	echo "=== lint ($$( ((lint_rc)) && echo FAILED || echo passed))"; cat "$$lint"; \
	echo "=== the inventories' checks (tests/)"; cat "$$checks"; rm -f "$$lint" "$$checks"; \
	exit $$(( scenarios || lint_rc || checks_rc ))

bench: setup ## Measure converge time and throughput against their baselines (3 runs, about 11 min each)
	@python scripts/bench/bench.py

soak: setup ## A million small tasks through the demo stack (started if down): throughput, memory, disk, logs, none lost
	@python scripts/soak/soak.py

demo: setup ## Bring the system up in containers and print how to use it
	@scripts/demo.sh up

demo-down: ## Tear the demo down
	@scripts/demo.sh down

clean: ## Destroy every scenario's containers and loop devices
	@for s in $(SCENARIOS) bench; do molecule destroy -s $$s || true; done
