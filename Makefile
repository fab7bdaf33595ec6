# SafeBell: everything a fresh machine with Python 3.11+ and make needs.
#   make demo   run the whole system on embedded defaults (Redis, WeChat emulator)
#   make test   run every test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo demo-once test test-cluster lint fmt clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "SafeBell needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bot demo

demo-once: $(STAMP)
	$(BIN)/bot demo --once

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The integration tests against a local 3-master Redis Cluster started from the same redis-server.
test-cluster: $(STAMP)
	@dir=$$(mktemp -d /tmp/sb-cluster-XXXXXX); \
	url=$$($(BIN)/python -m tests.cluster start $$dir) || exit 1; \
	echo "Redis Cluster: $$url"; \
	REDIS_URL="$$url" $(BIN)/python -m pytest -q -p no:cacheprovider -m "not faults" --ignore=tests/browser; rc=$$?; \
	$(BIN)/python -m tests.cluster stop $$dir; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check bot tests
	$(BIN)/mypy bot

fmt: $(STAMP)
	$(BIN)/ruff check --fix bot tests

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache test-artifacts
