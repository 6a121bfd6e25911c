"""Early stopping on a validation figure (early_stop.metric, signed so higher is better), with patience and a threshold."""

import math

from rlhand.config.figures import split_watched


def watched_value(stats: dict, watched: str) -> float:
    """The watched figure of one validation, signed so that higher is better; a NaN or inf (a loss
    that diverged) is the worst value, never a best."""
    sign, name = split_watched(watched)
    value = float(stats[name])
    return sign * value if math.isfinite(value) else -math.inf


class EarlyStopping:
    """Tracks the best of the watched figure (higher is better; early_stop.metric). An evaluation improves only if it beats the best by more than
    `threshold` (absolute); after `patience` evaluations in a row without improvement, stop.
    patience=None never stops but still tracks the best (for saving the best model)."""

    def __init__(self, patience: int | None, threshold: float):
        self.patience, self.threshold = patience, threshold
        self.best = -math.inf
        self.best_step = 0
        self.bad_evals = 0

    def update(self, value: float, step: int) -> bool:
        """Record one evaluation; True if it is a new best."""
        if value > self.best + self.threshold:
            self.best, self.best_step, self.bad_evals = value, step, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.bad_evals = state["best"], state["best_step"], state["bad_evals"]
