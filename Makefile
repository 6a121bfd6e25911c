# rlhand: `make run` installs and trains on the built-in default; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run train test test-all compare clean-outputs

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the local CPU build, never the CUDA one from the registry.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install rlhand (editable) with test extras

run: $(STAMP)  ## install, then train on the built-in default (ARGS="algo.lr=5e-4 ..." to override)
	$(VENV)/bin/rlhand-train $(ARGS)

train: run  ## same as run

test: $(STAMP)  ## install, then run the default test suite (no slow tests)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest -q

compare: $(STAMP)  ## plots + table over every run under outputs/ (DIRS="..." to choose, ARGS="--group-by seed")
	$(VENV)/bin/rlhand-compare $(or $(DIRS),outputs) --out outputs/compare $(ARGS)

clean-outputs:  ## delete outputs/ (all run folders)
	rm -rf outputs
