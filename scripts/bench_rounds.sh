#!/usr/bin/env bash
# The README's benchmark table: TRL's PPOTrainer and rlhand in six settings, interleaved in
# ROUNDS rounds (the VM's speed drifts by 10-20% over minutes, so each run is compared with the
# TRL run of its own round). About 5-6 minutes per round on 2 CPU cores. Needs `make bench-trl`
# once (it creates .venv-trl).
set -euo pipefail
ROUNDS=${ROUNDS:-4}
OUT=${OUT:-outputs/bench/rounds}
TRL_PY=${TRL_PY:-.venv-trl/bin/python}
TRL_PEER=${TRL_PEER:-../shared/peers/trl_ppo}
mkdir -p "$OUT"
bench() {  # bench NAME [overrides...]
    local name=$1; shift
    rlhand-bench --iters 5 --json "$OUT/r${r}_${name}.json" "$@" > /dev/null
}
for r in $(seq "${FIRST:-1}" "$ROUNDS"); do  # FIRST=5 ROUNDS=6 adds two rounds to a folder
    HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1 "$TRL_PY" "$TRL_PEER/bench_trl_ppo.py" --threads 2 --quiet \
        --json "$OUT/r${r}_trl.json" > /dev/null
    bench fp32
    bench fp32_one_model_at_a_time trainer.concurrent_models=false
    bench fp32_padded model.remove_padding=false
    bench shared model.critic_backbone=shared
    bench bf16 trainer.autocast=bfloat16
    bench shared_bf16 model.critic_backbone=shared trainer.autocast=bfloat16
    echo "round $r of $ROUNDS done"
done
rlhand-bench --table "$OUT"
