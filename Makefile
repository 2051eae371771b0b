# dhian — two commands on a fresh machine:
#   make demo   installs into .venv and runs the main job (the quickstart)
#   make test   installs into .venv and runs lint, format check, mypy and the fast tests
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-2.13.0*cp311*.whl))
PYTEST_ARGS ?=

.PHONY: install demo test test-slow soak lint format clean browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch 2.13.0 first (the CPU wheel on disk where it exists), then the package.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@if [ -n "$(TORCH_WHEEL)" ]; then $(BIN)/pip install -q "torch==2.13.0"; \
	 else $(BIN)/pip install -q "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu || $(BIN)/pip install -q "torch>=2.4"; fi
	$(BIN)/pip install -q -e ".[dev,test,serve,bench]"
	touch $@

install: $(VENV)/.installed

DEMO_ARGS ?=

demo: install
	$(BIN)/dhian selfcheck
	$(BIN)/dhian quickstart $(DEMO_ARGS)


# The browser tests drive Debian's Chromium with Playwright (no browser download); without
# /usr/bin/chromium they skip with a reason.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: browser tests will skip"; \
	  else echo "no /usr/bin/chromium (apt-get install chromium): browser tests will skip"; fi; \
	fi

test: install browser
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# The soak test of `dhian serve` (docs/reliability.md; slow, not in `make test`): SOAK_MINUTES
# of mixed translate / generate / chat load on 127.0.0.1 after a 60 s warm-up; it fails on any
# error or an RSS growth of 10% or more. The JSON report goes to SOAK_OUT. SmolLM2 is the LLM
# where its wheel is found (DHIAN_WHEELS), else a tiny random GPT.
SOAK_MINUTES ?= 10
SOAK_OUT ?= bench/results/soak.json

soak: install
	DHIAN_SOAK_MINUTES=$(SOAK_MINUTES) DHIAN_SOAK_OUT=$(abspath $(SOAK_OUT)) \
	  $(BIN)/pytest -m slow tests/bench/test_soak.py::test_soak -s $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
