"""Generalised advantage estimation over response tokens."""

import torch
from torch import Tensor


@torch.no_grad()
def compute_gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """rewards, values, mask: (B, T). Returns (advantages, returns), both (B, T) and 0 outside the mask.

    The value after the last valid token is 0 (the episode ends at EOS or at the length limit).
    Masked positions carry the running quantities through unchanged, so whatever sits at a pad
    never reaches a valid position. Returns are raw advantages + values (never whitened ones).
    """
    mask = mask.to(values.dtype)
    next_value = torch.zeros_like(values[:, 0])
    running = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        candidate = delta + gamma * lam * running
        running = m * candidate + (1 - m) * running
        next_value = m * values[:, t] + (1 - m) * next_value
        advantages[:, t] = running
    advantages = advantages * mask
    returns = (advantages + values) * mask
    return advantages, returns
