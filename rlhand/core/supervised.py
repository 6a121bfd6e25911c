"""The supervised stages' losses and statistics, as pure tensor functions.

Both are normalised by counts over the whole step (every rank's tokens or pairs, `total`), so the
gradients the ranks sum are the gradient of the whole batch, however it is split.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhand.core.masked import LOCAL, Reducer, masked_sum


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


def preference_stats(chosen: Tensor, rejected: Tensor, reducer: Reducer = LOCAL) -> dict[str, Tensor]:
    """Pairwise accuracy (ties count half), mean margin r_chosen - r_rejected, and the mean and
    std of all scores, over every rank's pairs."""
    diff = (chosen - rejected).detach().double()
    scores = torch.cat([chosen, rejected]).detach().double()
    correct = (diff > 0).double() + 0.5 * (diff == 0).double()
    sums = reducer.sum(torch.stack([correct.sum(), diff.sum(), scores.sum(), scores.pow(2).sum(), torch.tensor(float(len(diff)), dtype=torch.float64, device=diff.device)]))
    right, margin, total, squares, pairs = sums
    mean = total / (2 * pairs)
    return {
        "accuracy": right / pairs,
        "margin": margin / pairs,
        "score_mean": mean,
        "score_std": (squares / (2 * pairs) - mean**2).clamp_min(0).sqrt(),
    }
