"""Running mean and variance of a stream of scores, over every rank (Chan et al.'s parallel update:
each batch's count, mean and squared deviations merged into the totals in float64), so a run that
normalises rewards by them sees the same statistics on every rank and after a resume."""

import math

import torch
from torch import Tensor

from rlhand.core.masked import LOCAL, Reducer


class RunningMoments:
    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0.0, 0.0, 0.0  # m2: the sum of squared deviations from the mean

    def update(self, x: Tensor, reducer: Reducer = LOCAL) -> None:
        """Add every rank's `x` (1-D) to the statistics."""
        x = x.detach().double().flatten()
        count = reducer.sum(torch.tensor(float(len(x)), dtype=torch.float64, device=x.device))
        if count.item() == 0:
            return
        batch_mean = reducer.sum(x.sum()) / count
        batch_m2 = reducer.sum(((x - batch_mean) ** 2).sum())
        n, b = self.count, count.item()
        delta = batch_mean.item() - self.mean
        total = n + b
        self.mean += delta * b / total
        self.m2 += batch_m2.item() + delta**2 * n * b / total
        self.count = total

    @property
    def std(self) -> float:
        """The population standard deviation (0 before two scores)."""
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 0.0

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = float(state["count"]), float(state["mean"]), float(state["m2"])
