"""Importance weights for replayed samples: prioritized-replay weights and decoupled-PPO IS weights.

Decoupled PPO (Hilton et al. 2021) splits the old policy in two: the behaviour policy that
generated a sample, and the proximal policy (the current weights at the start of the iteration)
that anchors the clip range. The per-token loss becomes
    w_per * w_is * max(-A r, -A clip(r, 1-eps_low, 1+eps_high)),   r = pi / pi_prox,
    w_is = min(pi_prox / pi_behav, rho_bar)  (detached),  w_per = (N P(i))^-beta / max_j (N P(j))^-beta.
For fresh samples pi_prox = pi_behav, so w_is = 1 and the loss is plain PPO.
"""

import math

import torch
from torch import Tensor

from rlhand.core.masked import LOCAL, Reducer, masked_mean, masked_sum


def truncated_is_weights(prox_logprobs: Tensor, behaviour_logprobs: Tensor, rho_bar: float | None) -> Tensor:
    """min(pi_prox / pi_behav, rho_bar) per token, computed in log space (no overflow), detached.
    rho_bar=None leaves the ratio untruncated."""
    log_rho = (prox_logprobs - behaviour_logprobs).detach()
    if rho_bar is not None:
        log_rho = log_rho.clamp(max=math.log(rho_bar))
    return torch.exp(log_rho)


def per_is_weights(probs: Tensor, num_items: int, beta: float, min_prob: float) -> Tensor:
    """Prioritized-replay weights (N P(i))^-beta divided by the buffer-wide maximum (N p_min)^-beta,
    so every weight is <= 1 and the least likely item in the buffer would get exactly 1."""
    return ((probs * num_items) ** -beta) / ((min_prob * num_items) ** -beta)


def annealed_beta(beta0: float, increment: float, draws: int) -> float:
    """beta after `draws` annealing steps: beta0 + increment * draws, capped at 1."""
    return min(1.0, beta0 + increment * draws)


def effective_sample_size(weights: Tensor, mask: Tensor, reducer: Reducer = LOCAL) -> Tensor:
    """Normalised ESS = (sum w)^2 / (N sum w^2) over every rank's masked entries, in (0, 1]."""
    total, count, squares = reducer.sum(torch.stack([masked_sum(weights, mask), mask.sum().to(weights.dtype), masked_sum(weights**2, mask)]))
    return total**2 / (count * squares)


def truncated_fraction(log_rho: Tensor, rho_bar: float | None, mask: Tensor, reducer: Reducer = LOCAL) -> Tensor:
    """The share of masked tokens whose ratio exp(log_rho) is over rho_bar (0 when untruncated)."""
    if rho_bar is None:
        return torch.zeros((), dtype=log_rho.dtype, device=log_rho.device)
    return masked_mean((log_rho > math.log(rho_bar)).to(log_rho.dtype), mask, reducer=reducer)
