"""Several rewards as one score: the run's reward (a function, a reward model or a server) with
weight reward.weight, plus reward.components, each a reward function, reward model or server with its
own weight (TRL's reward_funcs / reward_weights: a learned reward model and rule rewards for format,
length, ...; rlhand/rewards/specs.py builds them).
Each component's batch mean is logged as reward/<name> (reward/main for the run's own reward)."""

import torch
from torch import Tensor

from rlhand.core.masked import LOCAL, Reducer, mean


class CombinedScorer:
    def __init__(self, main, main_weight: float, components: dict[str, tuple[object, float]]):
        self.main, self.main_weight, self.components = main, main_weight, components
        self.seen: dict[str, list[Tensor]] = {}  # since the last component_means(): every scored batch

    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor, rows=None) -> Tensor:
        parts = {"main": (self.main(prompt_ids, prompt_mask, response_ids, response_mask, ended, rows=rows), self.main_weight)}
        for name, (scorer, weight) in self.components.items():
            parts[name] = (scorer(prompt_ids, prompt_mask, response_ids, response_mask, ended, rows=rows), weight)
        for name, (scores, _) in parts.items():
            self.seen.setdefault(name, []).append(scores.float())
        return sum(weight * scores.float() for scores, weight in parts.values())

    def component_means(self, reducer: Reducer = LOCAL) -> dict[str, float]:
        """reward/<name>: each component's mean over every batch scored since the last call (all of an
        iteration's sampling rounds), over every rank; then starts counting again."""
        means = {f"reward/{name}": mean(torch.cat(parts), reducer).item() for name, parts in self.seen.items()}
        self.seen = {}
        return means

    def reset(self) -> None:
        self.seen = {}

