# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint chaos bench install browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The dashboard's browser tests drive Debian's Chromium (Playwright cannot download
# its own browser here). Installing needs root; without it those tests are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium is not installed: the browser tests will be skipped"

run: $(STAMP)
	$(BIN)/frontdesk dev

# Static checks, first in `make test` (so in CI): lint, formatting, types over gateway/ channels/ agents/.
lint: $(STAMP)
	@echo "ruff check" && $(BIN)/ruff check .
	@echo "ruff format --check" && $(BIN)/ruff format --check .
	@echo "mypy (gateway, channels, agents)" && $(BIN)/mypy

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) || true
	@# py-spy samples the worker for the per-step profile; not a dependency of frontdesk.
	@test -x .bench-tools/bin/py-spy || $(BIN)/pip install --quiet --target .bench-tools py-spy || \
	  echo "py-spy could not be installed: RESULTS.md will have no profile"
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .frontdesk .pytest_cache
