"""How replay joins a PPO iteration (decoupled PPO, Hilton et al. 2021):

1. draw replayed samples from the buffer (before adding this iteration's, so they are all older);
2. recompute, with the current weights and no grad, their proximal log-probs and their values;
   fresh samples keep their sampled log-probs as proximal ones (same weights, so w_is = 1 exactly);
3. weight each replayed token by PER weight x min(pi_prox / pi_behaviour, is_truncation) and each
   replayed sequence's value loss by its PER weight; the PPO ratio is taken against pi_prox;
4. after the update, refresh the drawn samples' priorities and store the fresh ones.

Advantages of replayed samples are GAE over their stored score and KL penalty (with the proximal
log-probs, as for fresh samples) and the recomputed values: Hilton et al. used GAE with recomputed
values on stale data, and with staleness capped (staleness_threshold) and the policy-side IS
weight already correcting the action distribution, V-trace's extra truncation was not needed here.
"""

import math

import torch
from torch import Tensor

from rlhand.config.schema import ReplayConfig
from rlhand.core.importance import effective_sample_size, truncated_is_weights
from rlhand.core.masked import masked_mean
from rlhand.models.build import Models
from rlhand.models.critic import logits_and_values
from rlhand.models.forward import sequence_inputs, token_logprobs
from rlhand.replay.buffer import Draw, ReplayBuffer
from rlhand.rollout.batch import Rollout, concat_rollouts


class ExperienceReplay:
    def __init__(self, cfg: ReplayConfig, buffer: ReplayBuffer, pad_id: int, device: torch.device):
        self.cfg, self.buffer, self.pad_id, self.device = cfg, buffer, pad_id, device
        self.draw: Draw | None = None  # this iteration's draw, until after_update

    @torch.no_grad()
    def extend(self, fresh: Rollout, step: int, models: Models, temperature: float, timer) -> tuple[Rollout, dict]:
        """The update batch: the fresh rows, then replayed ones (if the buffer can serve them)."""
        self.draw = self.buffer.draw(self.cfg.sample_size, step)
        if self.draw is None:
            return fresh, {"replay/sampled": 0}
        with timer("score_replay"):
            stored = self.buffer.rollout(self.draw.indices, self.device, self.pad_id)
            mask = stored.response_mask.bool()
            inputs = sequence_inputs(stored.prompt_ids, stored.prompt_mask, stored.response_ids, stored.response_mask)
            logits, values = logits_and_values(models.policy, models.critic, inputs, temperature)
            prox = token_logprobs(logits, stored.response_ids).masked_fill(~mask, 0.0)
            values = values.masked_fill(~mask, 0.0)
        tis = truncated_is_weights(prox, stored.behaviour_logprobs, self.cfg.is_truncation)
        per = self.draw.weights.to(self.device)
        replayed = stored.replace(
            proximal_logprobs=prox,
            values=values,
            policy_weights=per.unsqueeze(-1) * tis * stored.response_mask,
            value_weights=per,
        )
        fresh = fresh.replace(policy_weights=fresh.response_mask.float(), value_weights=torch.ones(len(fresh), device=self.device))
        stats = {
            "replay/sampled": len(replayed),
            "replay/is_weight_mean": per.mean().item(),
            "replay/beta": self.draw.beta,
            "replay/tis_mean": masked_mean(tis, replayed.response_mask).item(),
            "replay/tis_truncated_frac": _truncated_fraction(prox - stored.behaviour_logprobs, self.cfg.is_truncation, replayed.response_mask),
            "replay/ess": effective_sample_size(replayed.policy_weights, replayed.response_mask).item(),
        }
        return concat_rollouts([fresh, replayed], self.pad_id), stats

    def state_dict(self) -> dict:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state)

    def after_update(self, batch: Rollout, step: int) -> None:
        """Refresh the drawn rows' priorities (the replayed rows of `batch`, in draw order) and
        store the fresh rows with their raw GAE advantages."""
        priorities = sequence_priorities(batch, self.cfg.priority_eps)
        if self.draw is not None:
            self.buffer.update_priorities(self.draw.indices, priorities[~batch.fresh])
        fresh = batch.only_fresh()
        raw_advantages = (fresh.returns - fresh.values) * fresh.response_mask  # GAE before whitening
        self.buffer.add(fresh.replace(advantages=raw_advantages), step, priorities[batch.fresh])
        self.draw = None


def _truncated_fraction(log_rho: Tensor, rho_bar: float | None, mask: Tensor) -> float:
    if rho_bar is None:
        return 0.0
    return masked_mean((log_rho > math.log(rho_bar)).float(), mask).item()


def sequence_priorities(batch: Rollout, eps: float) -> Tensor:
    """Mean |raw GAE advantage| over each sample's tokens, plus eps (never 0)."""
    raw = (batch.returns - batch.values).abs() * batch.response_mask
    return raw.sum(dim=1) / batch.response_mask.sum(dim=1).clamp(min=1) + eps
