# Two commands a newcomer needs: `make quickstart` (PORT=8080 to serve on another port) and `make test`.
# Each creates (or refreshes) the virtual environment and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test lint typecheck unit bench bench-quick bench-tools clean venv services java browser

# bash with pipefail: pip's progress is filtered to one line per package, and pip's exit code still counts.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

$(STAMP): pyproject.toml
	@echo "creating the virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing propensity and its dependencies into $(VENV) (a few minutes the first time; one line per package)"
	@$(BIN)/python -m pip install -e '.[dev]' 2>&1 | awk '/^Collecting /{n++; printf "  [%3d] %s\n", n, $$2; fflush()} \
	  /^(Installing collected|Successfully installed)/{print "  " substr($$0, 1, 100) (length($$0) > 100 ? "…" : ""); fflush()} \
	  /^ERROR/{print; fflush()}'
	touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/propensity quickstart --workspace $(or $(WORKSPACE),quickstart-workspace) --port $(or $(PORT),8000)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) services java browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Service tests start their own redis-server and PostgreSQL on loopback; install the binaries when missing.
services:
	@command -v redis-server >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing redis-server and postgresql for the service tests (apt)"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server postgresql >/dev/null; }

# The Spark tests (engine: spark) need a Java runtime; OpenJDK 17 with pyspark 4.x is known to work.
java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "installing a Java runtime for the Spark tests (apt: openjdk-17-jre-headless)"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }

# The console's browser tests drive Debian's chromium through Playwright (its own browser download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-headless-shell >/dev/null 2>&1 || { \
	  echo "installing chromium for the console's browser tests (apt)"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# pytest exits 5 when it collected nothing; that is a failure here, as is any other non-zero code.
test: lint typecheck unit

# The HTTP benchmark drives the server with wrk (Debian's package).
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk for the HTTP benchmark (apt)"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }

bench: $(STAMP) bench-tools services
	$(BIN)/python -m benchmarks.run_all

# Every benchmark at a small size: a smoke run that they all still produce their figures.
bench-quick: $(STAMP) bench-tools services
	$(BIN)/python -m benchmarks.run_all --quick

clean:
	rm -rf $(VENV) quickstart-workspace .pytest_cache .mypy_cache .ruff_cache
