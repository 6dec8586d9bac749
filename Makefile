# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-lowest chaos bench install browser clean

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

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The same tests on the lowest versions pyproject.toml allows for each direct dependency
# (.ci/lowest_constraints.py pins each to its floor; what they pull in resolves as usual).
LOWEST := .venv-lowest

$(LOWEST)/.installed: pyproject.toml .ci/lowest_constraints.py
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install --quiet --upgrade pip
	$(PYTHON) .ci/lowest_constraints.py pyproject.toml test > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/pip install --quiet -c $(LOWEST)/constraints.txt -e '.[test]'
	touch $@

test-lowest: $(LOWEST)/.installed browser
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

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
	rm -rf $(VENV) $(LOWEST) .frontdesk .pytest_cache
