#!/usr/bin/env bash
# The estimator experiment: 80 runs (4 estimators x replay off/standard x 2 tasks x 5 seeds) plus
# the matched-update control (10 runs), then the report (docs/results/estimators.md's numbers) and
# rlhand-compare's plots per task (OUT/plots_<task>/).
#   scripts/estimator_experiment.sh [OUT=outputs/estimators]       about 45 minutes on 2 cores
set -euo pipefail
OUT=${1:-outputs/estimators}
BIN=${BIN:-.venv/bin}
"$BIN/rlhand-train" experiment=estimators hydra.sweep.dir="$OUT/runs" logging=plain
"$BIN/rlhand-train" experiment=matched_control hydra.sweep.dir="$OUT/control" logging=plain
"$BIN/python" scripts/estimator_report.py "$OUT" > "$OUT/report.md"
echo "report: $OUT/report.md"
