"""PPO loss terms: per-token losses plus the aggregation that turns them into a scalar."""

from enum import Enum

import torch
from torch import Tensor

from rlhand.core.kl import LOG_RATIO_CLAMP, KLEstimator, kl_estimate
from rlhand.core.masked import masked_mean, masked_sum


class LossAgg(str, Enum):
    token_mean = "token_mean"
    seq_mean_token_mean = "seq_mean_token_mean"
    seq_mean_token_sum = "seq_mean_token_sum"


def agg_loss(
    per_token: Tensor, mask: Tensor, mode: LossAgg | str, *, num_tokens: float | None = None, num_seqs: float | None = None
) -> Tensor:
    """Aggregate a (B, T) per-token loss to a scalar.

    token_mean: sum / N tokens; seq_mean_token_mean: mean over sequences of each one's token
    mean; seq_mean_token_sum: mean over sequences of each one's token sum. `num_tokens` and
    `num_seqs` are the counts of the whole minibatch: pass them when `per_token` is one
    micro-batch of it, so that accumulated micro-batch losses add up to the minibatch loss.
    """
    mode = LossAgg(mode)
    if mode is LossAgg.token_mean:
        return masked_sum(per_token, mask) / (num_tokens if num_tokens is not None else mask.sum())
    seq_sums = masked_sum(per_token, mask, dim=1)
    if mode is LossAgg.seq_mean_token_mean:
        seq_sums = seq_sums / mask.sum(dim=1).clamp(min=1)
    return seq_sums.sum() / (num_seqs if num_seqs is not None else per_token.shape[0])


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *, clip_low: float, clip_high: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token PPO-clip loss max(-A r, -A clip(r, 1-clip_low, 1+clip_high)), (B, T).

    clip_low == clip_high is symmetric PPO; clip_high > clip_low is DAPO's clip-higher.
    Stats (detached): clipfrac = share of tokens where the clipped term is active;
    approx_kl = masked mean of k3 for KL(pi_old || pi), the tokens being samples of pi_old
    (per token (r - 1) - log r, r = pi / pi_old, as CleanRL and SB3 log it); ratio mean.
    """
    log_ratio = (logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean(kl_estimate(old_logprobs, logprobs, KLEstimator.k3), mask),
            "ratio": masked_mean(ratio, mask),
        }
    return per_token, stats


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, clip_range: float | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token 0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2), (B, T); no clip when None.

    clipfrac: share of tokens where the clipped term is the larger one. Inside the clip range the
    clipped value is V itself, not V_old + (V - V_old), whose float rounding would otherwise count
    as clipping on a share of the tokens (and pick a term that differs from V in the last bit).
    """
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * unclipped, {"clipfrac": torch.zeros((), device=values.device)}
    delta = values - old_values
    outside = delta.abs() > clip_range
    clipped_values = torch.where(outside, old_values + delta.clamp(-clip_range, clip_range), values)
    clipped = (clipped_values - returns) ** 2
    per_token = torch.maximum(unclipped, clipped)
    clipfrac = masked_mean((clipped > unclipped).float().detach(), mask)
    return 0.5 * per_token, {"clipfrac": clipfrac}


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) over the last dim; pass temperature-scaled logits."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)
