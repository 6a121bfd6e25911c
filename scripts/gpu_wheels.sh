#!/usr/bin/env bash
# The wheels scripts/gpu_check.sh needs on a GPU machine without internet, whose image has torch,
# transformers, peft, tensorboard, rich and matplotlib but not Hydra: into .whl/ (git-ignored),
# for CPython 3.12 on x86-64 Linux. Run here, then carry .whl to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
pin() { grep -i "^$1==" constraints.txt | head -n 1; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "$(pin hydra-core)" "$(pin omegaconf)" "$(pin pytest-randomly)"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as a source archive only.
python3 -m pip wheel -q --no-deps -w .whl "$(pin antlr4-python3-runtime)"
ls .whl
