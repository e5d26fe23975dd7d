# One entry point for everything: `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NATIVE := $(wildcard mab/native/*.cpp mab/native/*.h mab/native/_build*.py)
ARGS   ?=

.PHONY: venv serve test lint bench bench-sampler wrk debug-test clean

# The virtualenv with mab installed editable: pip compiles the native sampler.
$(STAMP): setup.cfg setup.py pyproject.toml $(NATIVE)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev,bench]'
	touch $@

venv: $(STAMP)

serve: venv
	$(BIN)/mab serve $(ARGS)

test: venv
	$(BIN)/python -m pytest $(ARGS)

lint: venv
	$(BIN)/ruff check mab tests bench
	$(BIN)/mypy

# wrk drives the HTTP benchmarks; installed from Debian's packages when missing.
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

bench: venv wrk
	$(BIN)/python bench/run.py $(ARGS)

bench-sampler: venv
	$(BIN)/python bench/sampler.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info mab/native/_sampler.* .pytest_cache .mypy_cache
