# rlhand: `make run` installs and trains on the built-in default; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run train test test-all compare bench bench-trl clean-outputs

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

bench: $(STAMP)  ## time PPO iterations on the TRL peer's config; ARGS="trainer.autocast=bfloat16 ..." (a benchmark, not a test)
	$(VENV)/bin/rlhand-bench --iters 5 --json outputs/bench/rlhand.json $(if $(wildcard outputs/bench/trl.json),--compare outputs/bench/trl.json) $(ARGS)

TRL_VENV ?= .venv-trl
TRL_PEER ?= ../shared/peers/trl_ppo
bench-trl:  ## the TRL PPOTrainer peer on the same config, in its own venv (trl 1.12.0), into outputs/bench/trl.json
	test -x $(TRL_VENV)/bin/python || (python3 -m venv $(TRL_VENV) && $(TRL_VENV)/bin/pip install -q torch==2.13.0 && \
	  $(TRL_VENV)/bin/pip install -q trl==1.12.0 transformers==5.23.0 accelerate==1.15.0 datasets==5.2.0 torch==2.13.0)
	mkdir -p outputs/bench
	HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1 $(TRL_VENV)/bin/python $(TRL_PEER)/bench_trl_ppo.py --threads 2 --quiet --json outputs/bench/trl.json

clean-outputs:  ## delete outputs/ (all run folders)
	rm -rf outputs
