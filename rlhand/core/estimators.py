"""Critic-free advantage estimators: pure tensor functions, like compute_gae (core/advantages.py).

Group estimators see each prompt's `group_size` responses as consecutive rows (the rollout keeps
them so: rlhand/rollout/groups.py). They take one return per sequence, R_i (the score: a KL
penalty in the reward is added per token after, rlhand/stages/ppo/advantages.py), and give one
advantage per sequence, which the trainer spreads over the sequence's tokens.

- grpo (Shao et al. 2024, DeepSeekMath): A_i = (R_i - mean_g R) / (std_g R + eps), the std unbiased
  (torch.std, as TRL and verl take it).
- dr_grpo (Liu et al. 2025, "Understanding R1-Zero-like training"): A_i = R_i - mean_g R: no std
  division (it up-weights groups that are nearly all right or all wrong); its loss is also summed
  over tokens, not averaged per response (algo.loss_agg=seq_mean_token_sum, the preset sets it).
- rloo (Ahmadian et al. 2024): A_i = R_i - mean of the other k-1 returns of its group.
- reinforce_pp (Hu 2025, REINFORCE++): per token, the discounted return-to-go of the KL-shaped token
  rewards, no baseline, then whitened over the whole batch (algo.whiten_advantages).

A group of one has no baseline: its advantage is its return (baseline 0, scale 1, as verl does), so
a group of one is plain REINFORCE. A group whose returns are all equal gets advantage 0 everywhere.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlhand.core.advantages import compute_gae

GROUP_EPS = 1e-6  # verl's epsilon; TRL uses 1e-4


def _groups(returns: Tensor, group_size: int) -> Tensor:
    if returns.dim() != 1 or returns.numel() % group_size:
        raise ValueError(f"{tuple(returns.shape)} returns do not split into groups of {group_size}")
    return returns.view(-1, group_size)


@torch.no_grad()
def grpo_advantages(returns: Tensor, group_size: int, *, scale_by_std: bool = True, eps: float = GROUP_EPS) -> Tensor:
    """(B,) returns, rows grouped by `group_size` consecutive rows -> (B,) advantages."""
    groups = _groups(returns, group_size)
    if group_size == 1:
        return groups.reshape(-1).clone()
    centred = _exact_zero_if_equal(groups, groups - groups.mean(dim=1, keepdim=True))
    if scale_by_std:
        centred = centred / (groups.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


@torch.no_grad()
def rloo_advantages(returns: Tensor, group_size: int) -> Tensor:
    """(B,) returns -> (B,) advantages against the leave-one-out mean of the group."""
    groups = _groups(returns, group_size)
    if group_size == 1:
        return groups.reshape(-1).clone()
    others = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return _exact_zero_if_equal(groups, groups - others).reshape(-1)


def _all_equal(groups: Tensor) -> Tensor:
    """(G, k) -> (G,) bool: every member of the group equals the first."""
    return (groups == groups[:, :1]).all(dim=1)


def _exact_zero_if_equal(groups: Tensor, advantages: Tensor) -> Tensor:
    """A group of equal returns has no signal: exactly 0, although its mean computed in floating
    point may differ from the returns in the last bit (0.7 - 2.1 / 3 is not 0)."""
    return advantages.masked_fill(_all_equal(groups).unsqueeze(1), 0.0)


@torch.no_grad()
def returns_to_go(rewards: Tensor, mask: Tensor, *, gamma: float) -> Tensor:
    """(B, T) token rewards -> (B, T) discounted sums of the rewards from each token to the end:
    GAE with no values and lambda 1 (0 outside the mask)."""
    advantages, _ = compute_gae(rewards, torch.zeros_like(rewards, dtype=torch.float32), mask, gamma=gamma, lam=1.0)
    return advantages


def spread_over_tokens(per_sequence: Tensor, mask: Tensor) -> Tensor:
    """(B,) -> (B, T): every response token gets its sequence's value, 0 outside the mask."""
    return per_sequence.unsqueeze(1) * mask.to(per_sequence.dtype)


def informative_groups(scores: Tensor, group_size: int) -> Tensor:
    """(B,) scores -> (G,) bool: the groups whose scores are not all equal. A group of equal scores
    gets advantage 0 from every group estimator, so it adds no policy gradient (DAPO drops them)."""
    return ~_all_equal(_groups(scores, group_size))


# --- The registry: every estimator the trainer can run, with its traits -------------------------
# A new estimator is a function here (with its hand-value test) and a preset in conf/estimator/.


@dataclass(frozen=True)
class EstimatorInputs:
    """What an estimator sees of a batch (the rows it estimates for)."""

    rewards: Tensor  # (B, T) KL-shaped token rewards (whitened with algo.whiten_rewards)
    values: Tensor  # (B, T) the critic's values (0 without a critic)
    mask: Tensor  # (B, T) response tokens
    scores: Tensor  # (B,) the task's scores
    penalties: Tensor | None  # (B, T) the KL penalty alone as token rewards, when the KL is in the reward
    group_size: int
    gamma: float
    lam: float


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    needs_critic: bool  # a value function is built, trained and checkpointed
    grouped: bool  # compares a response with the others of its prompt (needs samples_per_prompt >= 2)
    estimate: Callable[[EstimatorInputs], tuple[Tensor, Tensor]]  # -> raw (advantages, returns), (B, T)


ESTIMATORS: dict[str, EstimatorSpec] = {}


def register(name: str, *, needs_critic: bool = False, grouped: bool = False):
    def add(estimate: Callable[[EstimatorInputs], tuple[Tensor, Tensor]]):
        ESTIMATORS[name] = EstimatorSpec(name, needs_critic, grouped, estimate)
        return estimate

    return add


@register("gae", needs_critic=True)
def gae(x: EstimatorInputs) -> tuple[Tensor, Tensor]:
    """A learned critic and GAE (PPO as InstructGPT trained it)."""
    return compute_gae(x.rewards, x.values, x.mask, gamma=x.gamma, lam=x.lam)


@register("reinforce_pp")
def reinforce_pp(x: EstimatorInputs) -> tuple[Tensor, Tensor]:
    """Return-to-go of the KL-shaped token rewards, no baseline (whitened by algo.whiten_advantages)."""
    advantages = returns_to_go(x.rewards, x.mask, gamma=x.gamma)
    return advantages, advantages + x.values * x.mask


@register("grpo", grouped=True)
def grpo(x: EstimatorInputs) -> tuple[Tensor, Tensor]:
    return _per_sequence(x, grpo_advantages(x.scores, x.group_size, scale_by_std=True))


@register("dr_grpo", grouped=True)
def dr_grpo(x: EstimatorInputs) -> tuple[Tensor, Tensor]:
    return _per_sequence(x, grpo_advantages(x.scores, x.group_size, scale_by_std=False))


@register("rloo", grouped=True)
def rloo(x: EstimatorInputs) -> tuple[Tensor, Tensor]:
    return _per_sequence(x, rloo_advantages(x.scores, x.group_size))


def _per_sequence(x: EstimatorInputs, per_sequence: Tensor) -> tuple[Tensor, Tensor]:
    """A group estimator's sequence advantages over the tokens, plus the KL penalty's return-to-go
    when the KL is in the reward (its group statistics are over the scores alone)."""
    advantages = spread_over_tokens(per_sequence, x.mask).to(torch.float32)
    if x.penalties is not None:
        advantages += returns_to_go(x.penalties, x.mask, gamma=x.gamma)
    return advantages, advantages + x.values * x.mask
