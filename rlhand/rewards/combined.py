"""Several rewards as one score: the run's reward (a function, a reward model or a server) with
weight reward.weight, plus reward.components, each a reward function with its own weight (TRL's
reward_funcs / reward_weights: a learned reward model and rule rewards for format, length, ...).
Each component's batch mean is logged as reward/<name> (reward/main for the run's own reward)."""

from torch import Tensor

from rlhand.core.masked import LOCAL, Reducer, mean


class CombinedScorer:
    def __init__(self, main, main_weight: float, components: dict[str, tuple[object, float]]):
        self.main, self.main_weight, self.components = main, main_weight, components
        self.last: dict[str, Tensor] = {}

    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor) -> Tensor:
        parts = {"main": (self.main(prompt_ids, prompt_mask, response_ids, response_mask, ended), self.main_weight)}
        for name, (scorer, weight) in self.components.items():
            parts[name] = (scorer(prompt_ids, prompt_mask, response_ids, response_mask, ended), weight)
        self.last = {name: scores for name, (scores, _) in parts.items()}
        return sum(weight * scores.float() for scores, weight in parts.values())

    def component_means(self, reducer: Reducer = LOCAL) -> dict[str, float]:
        """reward/<name>: each component's mean over the last scored batch, over every rank."""
        return {f"reward/{name}": mean(scores.float(), reducer).item() for name, scores in self.last.items()}


def component_weights(components: dict) -> dict[str, tuple[dict, float]]:
    """name -> (the function's spec without its weight, the weight); the schema checked both are there."""
    return {name: ({k: v for k, v in spec.items() if k != "weight"}, float(spec["weight"])) for name, spec in components.items()}

