"""KL estimators, KL-shaped token rewards and KL coefficient controllers."""

import math
from enum import Enum

import torch
from torch import Tensor

# Log-ratios are clamped before exp() so a stale or broken sample cannot overflow.
LOG_RATIO_CLAMP = 20.0


class KLEstimator(str, Enum):
    k1 = "k1"
    k2 = "k2"
    k3 = "k3"


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator | str) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi; all (B, T).

    k1 = log pi - log pi_ref (unbiased, either sign), k2 = (k1)^2 / 2 (biased, >= 0),
    k3 = exp(-k1) - 1 + k1 (unbiased, >= 0). In the reward use k1; as a loss use k2 or k3.
    """
    log_ratio = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    estimator = KLEstimator(estimator)
    if estimator is KLEstimator.k1:
        return log_ratio
    if estimator is KLEstimator.k2:
        return 0.5 * log_ratio**2
    return torch.expm1(-log_ratio) + log_ratio


def kl_shaped_rewards(scores: Tensor, kl: Tensor, mask: Tensor, *, kl_coef: float) -> Tensor:
    """Token rewards (B, T): -kl_coef * kl on every response token, plus the sequence score
    (B,) on the last valid token (the EOS, or the last token of a response cut at the limit)."""
    rewards = torch.where(mask.bool(), -kl_coef * kl, torch.zeros((), dtype=kl.dtype, device=kl.device))
    last = last_valid_index(mask)
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards


def last_valid_index(mask: Tensor) -> Tensor:
    """Index of the last 1 in each row of a (B, T) mask; rows must not be empty."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    if not bool(mask.bool().any(dim=1).all()):
        raise ValueError("a response mask row is empty")
    return torch.where(mask.bool(), positions, -1).max(dim=1).values


class FixedKLController:
    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019): move the coefficient towards a target sequence KL, the
    proportional error clipped to +-0.2 and scaled by n_steps / horizon."""

    def __init__(self, kl_coef: float, target: float, horizon: int):
        super().__init__(kl_coef)
        self.target, self.horizon = target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        if math.isnan(current_kl):
            return
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
