"""How far a generation engine's log-probs are from the trainer's, logged every iteration.

With engine=hf the rollout's behaviour and proximal log-probs are one tensor, and there is nothing
to report. With vLLM they come from different kernels (and, with top-k/top-p, from different
distributions): the user sees the gap, and how much of it the truncated IS weights absorb.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from rlhand.core.importance import truncated_fraction
from rlhand.core.masked import Reduce, masked_mean
from rlhand.rollout.batch import Rollout


def mismatch_stats(rollout: Rollout, is_truncation: float | None, reduce: Reduce | None = None, reduce_max: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
    """Over the rollout's tokens (every rank's, with `reduce` for sums and `reduce_max` for maxima):
    |log pi_prox - log pi_behaviour| (mean, max), the IS weights' mean and truncated share, and
    KL(pi_behaviour || pi_prox) estimated from the sampled tokens (k1)."""
    if rollout.policy_weights is None:  # an exact engine: its log-probs are the trainer's
        return {}
    mask = rollout.response_mask
    log_rho = rollout.proximal_logprobs - rollout.behaviour_logprobs
    gap = log_rho.abs().masked_fill(~mask.bool(), 0.0)
    largest = gap.max() if gap.numel() else torch.zeros((), device=gap.device)
    if reduce_max is not None:
        largest = reduce_max(largest)
    return {
        "rollout/logprob_diff_mean": masked_mean(gap, mask, reduce=reduce).item(),
        "rollout/logprob_diff_max": largest.item(),
        "rollout/kl_behaviour_proximal": masked_mean(-log_rho, mask, reduce=reduce).item(),
        "rollout/tis_mean": masked_mean(rollout.policy_weights, mask, reduce=reduce).item(),
        "rollout/tis_truncated_frac": truncated_fraction(log_rho, is_truncation, mask, reduce).item(),
    }
