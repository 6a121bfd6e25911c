"""What a hyperparameter search maximises: the number `rlhand-train` returns to Hydra's sweepers
(hydra/sweeper=optuna reads it as the trial's value; conf/experiment/tune.yaml).

The last validation reward (eval.every > 0; stage=sft: minus the validation loss, stage=reward_model:
the pairwise accuracy): held-out prompts, the policy as the run left it. A
run without validation returns the mean training reward of its last `window` iterations instead,
which rewards fitting the training prompts: set eval.every for a real search."""

import math

from hydra.experimental.callback import Callback

from rlhand.config.figures import split_watched
from rlhand.errors import exit_with

TUNE_WINDOW = 10


# Without validation, the training figure standing in for each stage's validation figure.
IN_TRAINING = {"val/reward": "reward/mean", "val/loss": "train/loss", "val/accuracy": "train/accuracy"}


def tuning_objective(history: list[dict], watched: str = "val/reward", window: int = TUNE_WINDOW) -> float:
    """`watched`: the stage's validation figure, higher is better ("-val/loss": lower is)."""
    sign, key = split_watched(watched)
    validated = [row[key] for row in history if key in row]
    if validated:
        return sign * float(validated[-1])
    if not history or key not in IN_TRAINING:
        return -math.inf  # stopped before its first iteration, or before the first validation of a named figure
    tail = history[-window:]
    return sign * float(sum(row[IN_TRAINING[key]] for row in tail) / len(tail))


class CheckTheSweep(Callback):
    """A Hydra callback (conf/hydra/default.yaml): the sweep's own settings checked before it starts,
    so that a setting no sweep can run with is one line, not the sweeper's traceback after it."""

    def on_multirun_start(self, config, **kwargs) -> None:
        trials = config.hydra.sweeper.get("n_trials")
        if trials is not None and trials < 1:
            # Hydra turns an Exception in a callback into a warning: stop as the CLI stops on bad input.
            exit_with(f"rlhand-train: error: hydra.sweeper.n_trials: {trials}; a study needs at least one trial")
