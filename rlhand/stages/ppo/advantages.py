"""Rollout -> token rewards -> advantages and returns, using the pure functions in rlhand.core.

The estimator (algo.estimator) turns the KL-shaped token rewards into raw advantages; returns are
always raw advantages + values (values are 0 without a critic), so returns - values is the raw
advantage for every estimator (replay priorities and the buffer read it so).

Group estimators (grpo, dr_grpo, rloo) take their group statistics over the scores alone. With the
KL penalty in the reward (algo.kl_placement=reward), each token's advantage then adds the
return-to-go of the per-token penalty, -kl_coef * sum_{t' >= t} kl_t', unnormalised: OpenRLHF's
convention for its group estimators. Summing the penalty into each response's return before the
group statistics (verl's GRPO with use_kl_in_reward, TRL's RLOO) lets the penalty, which differs
between a group's responses in the third decimal, decide the advantages of a group whose scores
are equal, and GRPO's std then scales that difference up to order 1: such a group would be trained
on noise. Here a group of equal scores gets exactly 0 from the group part, and only its penalty.

Replayed rows (replay on): gae and reinforce_pp recompute theirs like a fresh row's, from the stored
score, the KL penalty against the proximal log-probs and (gae) the recomputed values. A group
estimator's advantage compares a response with the rest of its group, which is not in the buffer
(its other members may be evicted, capped or never drawn): a replayed row keeps the raw advantage
it was given when it was fresh (`stored_advantages`), against its group as it was sampled.
"""

import torch
from torch import Tensor

from rlhand.config.schema import AlgoConfig, KLPlacement
from rlhand.core.estimators import ESTIMATORS, EstimatorInputs
from rlhand.core.kl import KLEstimator, kl_estimate, kl_shaped_rewards
from rlhand.core.masked import LOCAL, Reducer, masked_mean, masked_sum, masked_whiten, mean
from rlhand.rollout.batch import Rollout


@torch.no_grad()
def assign_advantages(
    batch: Rollout, algo: AlgoConfig, kl_coef: float, reducer: Reducer = LOCAL, group_size: int = 1
) -> tuple[Rollout, dict[str, float]]:
    """The batch with rewards / advantages / returns, and KL stats over its fresh rows (the adaptive
    KL controller and the kl/ref metric see the current policy's own samples only). Whitening and
    stats are over every rank's rows.

    The KL penalty is taken against the proximal log-probs: for fresh rows those are the sampled
    ones; a replayed row is penalised for where the current policy stands, not its old one."""
    mask = batch.response_mask
    if batch.ref_logprobs is None:
        kl_k1 = torch.zeros_like(batch.proximal_logprobs)
    else:
        kl_k1 = kl_estimate(batch.proximal_logprobs, batch.ref_logprobs, KLEstimator.k1)
    in_reward = algo.kl_placement is KLPlacement.reward and batch.ref_logprobs is not None
    reuse_k1 = not in_reward or algo.kl_estimator is KLEstimator.k1
    penalty = kl_k1 if reuse_k1 else kl_estimate(batch.proximal_logprobs, batch.ref_logprobs, algo.kl_estimator)
    rewards = kl_shaped_rewards(batch.scores, penalty, mask, kl_coef=kl_coef if in_reward else 0.0)
    if algo.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False, reducer=reducer)
    penalties = kl_shaped_rewards(torch.zeros_like(batch.scores), penalty, mask, kl_coef=kl_coef) if in_reward else None
    advantages, returns = estimate_advantages(batch, rewards, algo, group_size, penalties)
    if algo.whiten_advantages:
        advantages = masked_whiten(advantages, mask, reducer=reducer)
    fresh = batch.fresh
    fresh_kl, fresh_mask = kl_k1[fresh], mask[fresh]
    stats = {
        "kl/ref": mean(masked_sum(fresh_kl, fresh_mask, dim=1), reducer).item(),
        "kl/ref_per_token": masked_mean(fresh_kl, fresh_mask, reducer=reducer).item(),
    }
    if not algo.whiten_rewards:  # after whitening, reward minus score is no longer the KL penalty
        total = mean(masked_sum(rewards[fresh], fresh_mask, dim=1), reducer).item()
        stats["reward/total"] = total
        stats["reward/non_score"] = total - mean(batch.scores[fresh], reducer).item()
    return batch.replace(rewards=rewards, advantages=advantages, returns=returns), stats


def estimate_advantages(batch: Rollout, rewards: Tensor, algo: AlgoConfig, group_size: int, penalties: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(advantages, returns), raw, (B, T), by the registered estimator (rlhand/core/estimators.py).
    A group estimator sees the fresh rows only; its replayed rows keep their stored advantages.
    `penalties`: the KL penalty alone as token rewards (KL in the reward), which a group estimator
    adds per token after its group statistics."""
    spec, mask = ESTIMATORS[algo.estimator], batch.response_mask

    def inputs(rows) -> EstimatorInputs:
        return EstimatorInputs(
            rewards[rows], batch.values[rows], mask[rows], batch.scores[rows], None if penalties is None else penalties[rows],
            group_size, algo.gamma, algo.lam,
        )

    if not spec.grouped:
        return spec.estimate(inputs(slice(None)))
    fresh = batch.fresh
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    advantages[fresh], _ = spec.estimate(inputs(fresh))
    if not bool(fresh.all()):
        if batch.stored_advantages is None:
            raise ValueError("replayed rows of a group estimator need their stored advantages")
        advantages[~fresh] = batch.stored_advantages[~fresh].float() * mask[~fresh]
    return advantages, advantages + batch.values * mask
