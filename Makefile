# Two commands do everything on a fresh machine (no GPU, no internet needed beyond the package index):
#   make repro   set up .venv if missing, then run the whole pipeline on the built-in world (dvc repro)
#   make test    set up .venv if missing, then run the test suite
#   make test-fast   the unit tests only (no end-to-end runs: pytest -m "not slow")
#   make lab     open the notebooks in JupyterLab
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# papermill starts notebook kernels with the python it finds first, so the venv goes first on PATH
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test test-fast lab clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lab: setup
	$(BIN)/jupyter lab notebooks/

clean-cache:  # decoded-image arrays; rebuilt on demand
	rm -rf work/cache
