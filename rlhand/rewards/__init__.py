"""Scorers: one float per (prompt, response), from a reward function or a reward model."""

from rlhand.rewards.function import FunctionScorer, resolve_reward_function
from rlhand.rewards.model import ModelScorer

__all__ = ["FunctionScorer", "ModelScorer", "resolve_reward_function"]
