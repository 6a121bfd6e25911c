"""How far a generation engine's log-probs are from the trainer's, logged every iteration.

With engine=hf the rollout's behaviour and proximal log-probs are one tensor, and there is nothing
to report. With vLLM they come from different kernels (and, with top-k/top-p, from different
distributions): the user sees the gap, and how much of it the truncated IS weights absorb.
"""

import torch

from rlhand.core.importance import truncated_fraction
from rlhand.core.masked import LOCAL, Reducer, masked_mean
from rlhand.rollout.batch import Rollout


def mismatch_stats(rollout: Rollout, is_truncation: float | None, reducer: Reducer = LOCAL) -> dict[str, float]:
    """Over every rank's tokens of the rollout:
    |log pi_prox - log pi_behaviour| (mean, max), the IS weights' mean and truncated share, and
    KL(pi_behaviour || pi_prox) estimated from the sampled tokens (k1)."""
    if rollout.policy_weights is None:  # an exact engine: its log-probs are the trainer's
        return {}
    mask = rollout.response_mask
    log_rho = rollout.proximal_logprobs - rollout.behaviour_logprobs
    gap = log_rho.abs().masked_fill(~mask.bool(), 0.0)
    largest = gap.max() if gap.numel() else torch.zeros((), device=gap.device)
    largest = reducer.max(largest.detach().double())
    return {
        "rollout/logprob_diff_mean": masked_mean(gap, mask, reducer=reducer).item(),
        "rollout/logprob_diff_max": largest.item(),
        "rollout/kl_behaviour_proximal": masked_mean(-log_rho, mask, reducer=reducer).item(),
        "rollout/tis_mean": masked_mean(rollout.policy_weights, mask, reducer=reducer).item(),
        "rollout/tis_truncated_frac": truncated_fraction(log_rho, is_truncation, mask, reducer).item(),
    }
