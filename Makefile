# Parley: `make run` to chat, `make test` to check everything. Both set up from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: install model test lint typecheck pytest run bench llama-server clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# llama-cpp-python compiles from source the first time (~10 min on 2 cores); pip caches the wheel.
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

model: install
	$(BIN)/python -c "from engine.download import demo_model_path; print('demo model:', demo_model_path())"

lint: install
	$(BIN)/ruff check bot adapters engine tests bench

typecheck: install
	$(BIN)/mypy bot adapters engine

pytest: install model
	$(BIN)/pytest -q

test: lint typecheck pytest

run: install model
	$(BIN)/parley run

# One table of ratios measured in one run (< 10 min). With LLAMA_SERVER_BIN set (see
# `make llama-server`) the same load also runs against llama.cpp's own server.
bench: install model
	$(BIN)/python -m bench

llama-server: install
	bench/build_llama_server.sh .cache/llama-server

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
