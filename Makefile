# One entry point for everything: `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NATIVE := $(wildcard mab/native/[a-z]*.cpp mab/native/*.h mab/native/_build.py mab/native/_stamp.py)
ARGS   ?=

.PHONY: venv serve test test-native-debug lint bench bench-sampler wrk redis clean

# The virtualenv with mab installed editable: pip compiles the native sampler.
$(STAMP): setup.cfg setup.py pyproject.toml $(NATIVE)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev,bench]'
	touch $@

venv: $(STAMP)

serve: venv
	$(BIN)/mab serve $(ARGS)

# The suite, then lint, then the native code's tests once more under the sanitizers.
test: venv redis
	$(BIN)/python -m pytest $(ARGS)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory test-native-debug

# One more pass of the native code's tests against a copy built with -O0, assertions,
# AddressSanitizer and UBSan: the request parser reads untrusted bytes. PYTHONMALLOC=malloc:
# else bodies under 512 bytes sit in pymalloc's arenas, where ASan misses reads past them.
DEBUG_DIR := build/native-debug
SANITIZE  := -fsanitize=address,undefined -fno-omit-frame-pointer
test-native-debug: venv
	rm -rf $(DEBUG_DIR) && mkdir -p $(DEBUG_DIR)
	cp -r mab tests setup.py setup.cfg pyproject.toml README.md $(DEBUG_DIR)/
	find $(DEBUG_DIR) -name '*.so' -delete
	cd $(DEBUG_DIR) && MAB_NATIVE_DEBUG=1 CFLAGS="$(SANITIZE)" LDFLAGS="$(SANITIZE)" \
		$(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace >/dev/null
	cd $(DEBUG_DIR) && \
		LD_PRELOAD="$$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		PYTHONMALLOC=malloc \
		$(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_sampler.py tests/test_request.py tests/test_codec.py tests/test_predict.py \
		tests/test_runner.py

lint: venv
	$(BIN)/ruff check mab tests bench
	$(BIN)/mypy

# wrk drives the HTTP benchmarks; installed from Debian's packages when missing.
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

# redis-server and redis-cli for the redis store's tests (they start their own servers on
# free ports; Debian's package also starts a daemon on 6379, which nothing here uses), and
# openssl, which makes the certificates of the rediss:// test.
redis:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; }
	@command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }

bench: venv wrk
	$(BIN)/python bench/run.py $(ARGS)

bench-sampler: venv
	$(BIN)/python bench/sampler.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info mab/native/*.so mab/native/_native.cpp .pytest_cache .mypy_cache .ruff_cache
