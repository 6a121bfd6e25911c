"""The supervised stages' losses and statistics, as pure tensor functions.

Both are normalised by counts over the whole step (every rank's tokens or pairs, `total`), so the
gradients the ranks sum are the gradient of the whole batch, however it is split.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhand.core.masked import masked_sum


def sft_loss(logprobs: Tensor, mask: Tensor, total_tokens: Tensor | float) -> Tensor:
    """Negative log-likelihood per trained token: -sum(log p(token) over `mask`) / total_tokens.
    `mask` (B, T) marks the tokens the loss is on (a completion's; rlhand/stages/sft/)."""
    return -masked_sum(logprobs, mask) / total_tokens


def bradley_terry_loss(chosen: Tensor, rejected: Tensor, total_pairs: Tensor | float, margin: Tensor | None = None, center_coef: float = 0.0) -> Tensor:
    """Bradley-Terry: -log sigmoid(r_chosen - r_rejected - margin), summed and divided by total_pairs;
    with center_coef, + center_coef * (r_chosen + r_rejected)^2 per pair the same way (scores near 0)."""
    diff = chosen - rejected - (margin if margin is not None else 0.0)
    loss = -F.logsigmoid(diff).sum()
    if center_coef:
        loss = loss + center_coef * (chosen + rejected).pow(2).sum()
    return loss / total_pairs


def preference_sums(chosen: Tensor, rejected: Tensor, margin: Tensor | None = None, center_coef: float = 0.0) -> dict[str, Tensor]:
    """Additive float64 statistics of a batch of pairs (summed over micro-batches and ranks, then
    preference_figures): pairs, pairs ranked right (ties count half), the margins r_chosen - r_rejected,
    the loss's numerator (Bradley-Terry with the margin and centring term), and the scores' sum and squares."""
    chosen, rejected = chosen.detach().double(), rejected.detach().double()
    diff = chosen - rejected
    shifted = diff - (margin.detach().double() if margin is not None else 0.0)
    objective = -F.logsigmoid(shifted).sum() + (center_coef * (chosen + rejected).pow(2).sum() if center_coef else 0.0)
    scores = torch.cat([chosen, rejected])
    return {
        "pairs": torch.tensor(float(len(diff)), dtype=torch.float64, device=diff.device),
        "right": ((diff > 0).double() + 0.5 * (diff == 0).double()).sum(),
        "margin": diff.sum(),
        "objective": objective,
        "score": scores.sum(),
        "square": scores.pow(2).sum(),
    }


def preference_figures(sums: dict[str, Tensor]) -> dict[str, Tensor]:
    """loss (per pair), accuracy, mean margin, and the mean and std of every score, from preference_sums' totals."""
    pairs = sums["pairs"]
    mean = sums["score"] / (2 * pairs)
    return {
        "loss": sums["objective"] / pairs,
        "accuracy": sums["right"] / pairs,
        "margin": sums["margin"] / pairs,
        "score_mean": mean,
        "score_std": (sums["square"] / (2 * pairs) - mean**2).clamp_min(0).sqrt(),
    }
