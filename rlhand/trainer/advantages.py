"""Rollout -> token rewards -> advantages and returns, using the pure functions in rlhand.core."""

import torch

from rlhand.config.schema import AlgoConfig, KLPlacement
from rlhand.core.advantages import compute_gae
from rlhand.core.kl import KLEstimator, kl_estimate, kl_shaped_rewards
from rlhand.core.masked import masked_mean, masked_sum, masked_whiten
from rlhand.rollout.collect import Rollout


@torch.no_grad()
def assign_advantages(rollout: Rollout, algo: AlgoConfig, kl_coef: float, stats_rows: int | None = None) -> dict[str, float]:
    """Fill rollout.rewards / advantages / returns in place; return KL stats over the first
    `stats_rows` rows (the fresh ones when replayed rows follow: the adaptive KL controller and the
    kl/ref metric see the current policy's own samples only), all rows by default."""
    mask = rollout.response_mask
    if rollout.ref_logprobs is None:
        kl_k1 = torch.zeros_like(rollout.logprobs)
    else:
        kl_k1 = kl_estimate(rollout.logprobs, rollout.ref_logprobs, KLEstimator.k1)
    in_reward = algo.kl_placement is KLPlacement.reward and rollout.ref_logprobs is not None
    reuse_k1 = not in_reward or algo.kl_estimator is KLEstimator.k1
    penalty = kl_k1 if reuse_k1 else kl_estimate(rollout.logprobs, rollout.ref_logprobs, algo.kl_estimator)
    rewards = kl_shaped_rewards(rollout.scores, penalty, mask, kl_coef=kl_coef if in_reward else 0.0)
    if algo.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = compute_gae(rewards, rollout.values, mask, gamma=algo.gamma, lam=algo.lam)
    if algo.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    rollout.rewards, rollout.advantages, rollout.returns = rewards, advantages, returns
    rows = slice(0, stats_rows if stats_rows is not None else len(rollout))
    kl_k1, mask, rewards, scores = kl_k1[rows], mask[rows], rewards[rows], rollout.scores[rows]
    stats = {
        "kl/ref": masked_sum(kl_k1, mask, dim=1).mean().item(),
        "kl/ref_per_token": masked_mean(kl_k1, mask).item(),
    }
    if not algo.whiten_rewards:  # after whitening, reward minus score is no longer the KL penalty
        total = masked_sum(rewards, mask, dim=1).mean().item()
        stats["reward/total"] = total
        stats["reward/non_score"] = total - scores.mean().item()
    return stats
