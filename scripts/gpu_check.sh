#!/usr/bin/env bash
# The GPU check (docs/memory.md, README): PPO on a Qwen2-0.5B-shaped model, full / LoRA / shared critic,
# 3 iterations each, then the tests marked cuda; about 8 minutes on one H200. Wheels in .whl/
# (scripts/gpu_wheels.sh) are installed first where the machine lacks them. Results also go to
# $OUT/gpu_check.json (or ./gpu_check.json).
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/rlhand-site .whl/*.whl
  export PYTHONPATH="/tmp/rlhand-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
python3 scripts/gpu_check.py --json "${OUT:-.}/gpu_check.json" "$@"
