"""What a hyperparameter search maximises: the number `rlhand-train` returns to Hydra's sweepers
(hydra/sweeper=optuna reads it as the trial's value; conf/experiment/tune.yaml).

The last validation reward (eval.every > 0): held-out prompts, the policy as the run left it. A
run without validation returns the mean training reward of its last `window` iterations instead,
which rewards fitting the training prompts: set eval.every for a real search."""

import math

TUNE_WINDOW = 10


def tuning_objective(history: list[dict], window: int = TUNE_WINDOW) -> float:
    validated = [row["val/reward"] for row in history if "val/reward" in row]
    if validated:
        return float(validated[-1])
    if not history:
        return -math.inf  # stopped before its first iteration
    tail = history[-window:]
    return float(sum(row["reward/mean"] for row in tail) / len(tail))
