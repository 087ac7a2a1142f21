# The two commands of README.md: `make demo` and `make test`. Each installs and starts
# what it needs: the virtualenv, the Python packages, and the local stack
# (dockerd, two registries, demo images; see deploy/local/stack.sh).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Test workers: most of a test's time is spent waiting for agents, engines and servers,
# so two workers on this 2-core machine finish the suite in about three quarters of the
# time. Tests that share one thing (the lab) are kept on one worker (--dist loadgroup).
TEST_WORKERS ?= 2

.PHONY: test demo stack-up stack-down stack-status agent-image lab-up lab-down lint typecheck contracts unit bench schema

$(INSTALLED): pyproject.toml
	bash deploy/local/python-env.sh $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[controller,test,dev]'
	touch $@

stack-up:
	bash deploy/local/stack.sh up

stack-down:
	bash deploy/local/stack.sh down

stack-status:
	bash deploy/local/stack.sh status

# The fleet-agent image (deploy/agent), tagged with the project's version and pushed to
# the local registry; rebuilt only when what it is made of changed.
agent-image: $(INSTALLED) stack-up
	bash deploy/agent/build.sh

# The lab: 3 hosts, each a network namespace with its own dockerd and the agent image
# installed from an enrolment bundle, on a 3-node TLS NATS cluster (deploy/lab/lab.sh).
lab-up: $(INSTALLED) stack-up
	bash deploy/lab/lab.sh up

lab-down:
	bash deploy/lab/lab.sh down

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

contracts: $(INSTALLED)
	$(BIN)/lint-imports

typecheck: $(INSTALLED)
	$(BIN)/mypy

schema: $(INSTALLED)
	$(BIN)/python -m protocol.schema_file

unit: $(INSTALLED)
	$(BIN)/pytest -m "not integration"

test: $(INSTALLED) stack-up lint contracts typecheck
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

demo: $(INSTALLED) stack-up
	$(BIN)/python deploy/local/demo.py

bench: $(INSTALLED)
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/agent_replace.py
	$(BIN)/python bench/agent_footprint.py
	bash deploy/agent/build.sh >/dev/null
	$(BIN)/python bench/agent_container_footprint.py
	bash deploy/lab/lab.sh up >/dev/null
	$(BIN)/python bench/agent_upgrade.py
	$(BIN)/python bench/rollout_scale.py
	$(BIN)/python bench/telemetry.py
	$(BIN)/python bench/config_fanout.py
	$(BIN)/python bench/signing.py
