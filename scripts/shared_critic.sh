#!/usr/bin/env bash
# The shared-backbone critic against a critic of its own, on the built-in default (ppo, letters
# task, 150 iterations), 4 seeds each (about 5 minutes on 2 CPU cores); then rlhand-compare with the
# same threshold as the replay experiment.
set -euo pipefail
EXP=${EXP:-outputs/experiments/shared_critic}
rlhand-train -m model.critic_backbone=separate,shared seed=0,1,2,3 logging=plain trainer.save_final=false \
    hydra.sweep.dir="$EXP/runs"
rlhand-compare "$EXP/runs" --group-by model.critic_backbone --threshold 0.25 --window 5 --out "$EXP/compare"
