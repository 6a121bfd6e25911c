"""What the PPO loss is, apart from how it is computed and stepped (rlhand/stages/ppo/update.py).

PPOObjective turns a (micro-)batch and the models' outputs on it into scalar loss terms and
detached statistics, split into the policy's side and the critic's so that each side can be
computed and back-propagated on its own. It runs no model, holds no optimizer and calls no
backward: everything here is tensors in, tensors out.
"""

from torch import Tensor

from rlhand.config.schema import AlgoConfig, KLPlacement
from rlhand.core.kl import kl_estimate
from rlhand.core.losses import agg_loss, clipped_policy_loss, clipped_value_loss
from rlhand.core.masked import masked_mean
from rlhand.models.forward import PolicyOutputs
from rlhand.rollout.batch import Rollout

Terms = tuple[dict[str, Tensor], dict[str, Tensor]]  # (losses with grad, detached stats)


class PPOObjective:
    """One (micro-)batch's PPO loss. `num_tokens` / `num_seqs` are the counts of the whole minibatch
    the batch belongs to (across all ranks when data-parallel): every part is normalised by them, so
    the parts' gradients add up to the whole minibatch's. Each side's "total" is its share of the
    loss; combine() adds them up."""

    def __init__(self, batch: Rollout, algo: AlgoConfig, *, kl_coef: float, num_tokens: Tensor | None = None, num_seqs: int | None = None):
        self.batch, self.algo, self.kl_coef = batch, algo, kl_coef
        self.num_tokens, self.num_seqs = num_tokens, num_seqs

    def agg(self, per_token: Tensor) -> Tensor:
        return agg_loss(per_token, self.batch.response_mask, self.algo.loss_agg, num_tokens=self.num_tokens, num_seqs=self.num_seqs)

    def policy(self, out: PolicyOutputs) -> Terms:
        """From the policy's log-probs and entropies of the response tokens (tempered softmax)."""
        batch, algo, mask = self.batch, self.algo, self.batch.response_mask
        logprobs = out.logprobs
        pg_tokens, pg_stats = clipped_policy_loss(
            logprobs, batch.proximal_logprobs, batch.advantages, mask, clip_low=algo.clip_ratio_low, clip_high=algo.clip_ratio_high
        )
        if batch.policy_weights is not None:  # replay: decoupled-PPO IS x PER weights (detached)
            pg_tokens = pg_tokens * batch.policy_weights
        entropy_tokens = out.entropy  # with grad when the entropy bonus has a weight (policy_forward's entropy_grad)
        entropy = self.agg(entropy_tokens)
        losses = {"policy": self.agg(pg_tokens), "entropy": entropy}
        total = losses["policy"] - algo.ent_coef * entropy
        if algo.kl_placement is KLPlacement.loss and batch.ref_logprobs is not None:
            losses["kl"] = self.agg(kl_estimate(logprobs, batch.ref_logprobs, algo.kl_estimator))
            total = total + self.kl_coef * losses["kl"]
        losses["total"] = total
        stats = {
            "policy/clipfrac": pg_stats["clipfrac"],
            "policy/approx_kl": pg_stats["approx_kl"],
            "policy/ratio": pg_stats["ratio"],
            "policy/entropy": masked_mean(entropy_tokens.detach(), mask),
        }
        return losses, stats

    def value(self, values: Tensor) -> Terms:
        """From the critic's (B, R) values."""
        batch = self.batch
        vf_tokens, vf_stats = clipped_value_loss(values, batch.values, batch.returns, batch.response_mask, clip_range=self.algo.value_clip_ratio)
        if batch.value_weights is not None:  # replay: PER weights per sequence (detached)
            vf_tokens = vf_tokens * batch.value_weights.unsqueeze(-1)
        value = self.agg(vf_tokens)
        return {"value": value, "total": self.algo.vf_coef * value}, {"value/clipfrac": vf_stats["clipfrac"]}

    @staticmethod
    def combine(policy_terms: Terms, value_terms: Terms | None) -> Terms:
        """Both sides' terms as one; value_terms None: a critic-free estimator."""
        if value_terms is None:
            return policy_terms
        (policy_losses, policy_stats), (value_losses, value_stats) = policy_terms, value_terms
        losses = {**policy_losses, **value_losses, "total": policy_losses["total"] + value_losses["total"]}
        return losses, {**policy_stats, **value_stats}
