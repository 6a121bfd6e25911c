#!/usr/bin/env bash
# The replay sample-efficiency experiment reported in the README (about 25 minutes on 2 CPU cores):
# plain PPO and PPO with each seed replay scenario, and the ppo_v2 preset, 3 seeds each, 150
# iterations on the built-in letters task; then rlhand-compare with the threshold fixed beforehand.
set -euo pipefail
EXP=${EXP:-outputs/experiments/sample_efficiency}
rlhand-train -m algo=ppo replay=off,standard,high_efficiency,priority,conservative seed=0,1,2 \
    logging=plain trainer.save_final=false hydra.sweep.dir="$EXP/ppo_replay"
rlhand-train -m algo=ppo_v2 seed=0,1,2 logging=plain trainer.save_final=false hydra.sweep.dir="$EXP/ppo_v2"
rlhand-compare "$EXP" --threshold 0.25 --window 5 --out "$EXP/compare"
