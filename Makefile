# SafeBell: everything a fresh machine with Python 3.11+ and make needs.
#   make demo   run the whole system on embedded defaults (Redis, WeChat emulator)
#   make test   run every test
#   make bench  the webhook benchmark against its baselines (bot bench --list for the others)
#   make test-faults   only the fault tests (kill -9, WeChat errors), with their figures
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: install browser demo demo-once test test-faults test-cluster lint fmt clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "SafeBell needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's chromium through Playwright (never `playwright install`). Installed
# once, only when missing and only as root (with CJK fonts, so screenshots show the Chinese);
# otherwise nothing is installed and the browser tests are skipped, saying why.
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null) \
	    || echo "could not install chromium: the browser tests will be skipped"; \
	else echo "no $(CHROMIUM) and not root: the browser tests will be skipped (run: sudo make browser)"; fi

demo: $(STAMP)
	$(BIN)/bot demo

demo-once: $(STAMP)
	$(BIN)/bot demo --once

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The fault tests alone (they also run in `make test`): kill -9 the worker, Redis and the scheduler,
# WeChat failing in bursts; each prints its figures (cards sent, missing, doubled; confirmations kept).
test-faults: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m faults tests/faults

# The integration tests against a local 3-master Redis Cluster started from the same redis-server.
test-cluster: $(STAMP)
	@dir=$$(mktemp -d /tmp/sb-cluster-XXXXXX); \
	url=$$($(BIN)/python -m tests.cluster start $$dir) || exit 1; \
	echo "Redis Cluster: $$url"; \
	REDIS_URL="$$url" $(BIN)/python -m pytest -q -p no:cacheprovider -m "not faults" --ignore=tests/browser; rc=$$?; \
	$(BIN)/python -m tests.cluster stop $$dir; exit $$rc

# The benchmarks (`bot bench --list`; `bot bench NAME --json` for figures). `make bench` first installs
# the bench extra (WeRoBot and gunicorn for the webhook's baseline),
# then runs the callback side by side; wrk is used when installed (Debian: apt-get install wrk).
BENCH_STAMP := $(VENV)/.bench-installed
.PHONY: bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/bot bench webhook

lint: $(STAMP)
	$(BIN)/ruff check bot tests
	$(BIN)/ruff format --check bot tests
	$(BIN)/mypy bot

fmt: $(STAMP)
	$(BIN)/ruff check --fix bot tests
	$(BIN)/ruff format bot tests

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache test-artifacts
