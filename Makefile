# Two commands do everything on a fresh machine (no GPU, no internet needed beyond the package index):
#   make repro   set up .venv if missing, then run the whole pipeline on the built-in world (dvc repro)
#   make test    set up .venv if missing, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# papermill starts notebook kernels with the python it finds first, so the venv goes first on PATH
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

clean-cache:  # decoded-image arrays; rebuilt on demand
	rm -rf work/cache
