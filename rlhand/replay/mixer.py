"""How replay joins a PPO iteration (decoupled PPO, Hilton et al. 2021):

1. draw replayed samples from the buffer (before adding this iteration's, so they are all older);
2. recompute, with the current weights and no grad, their proximal log-probs and their values;
   fresh samples keep their sampled log-probs as proximal ones (same weights, so w_is = 1 exactly);
3. weight each replayed token by PER weight x min(pi_prox / pi_behaviour, is_truncation) and each
   replayed sequence's value loss by its PER weight; the PPO ratio is taken against pi_prox;
4. after the update, refresh the drawn samples' priorities and store the fresh ones.

Advantages of replayed samples (algo.estimator=gae) are GAE over their stored score and KL penalty
(with the proximal log-probs, as for fresh samples) and the recomputed values: Hilton et al. used
GAE with recomputed values on stale data, and with staleness capped (staleness_threshold) and the
policy-side IS weight already correcting the action distribution, V-trace's extra truncation was
not needed here. reinforce_pp recomputes the same way (without values); a group estimator keeps
each replayed sample's stored advantage (rlhand/stages/ppo/advantages.py).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from rlhand.config.schema import ReplayConfig
from rlhand.core.importance import effective_sample_size, truncated_fraction, truncated_is_weights
from rlhand.core.masked import masked_mean, mean
from rlhand.distributed.context import DistContext
from rlhand.models.build import Models
from rlhand.models.forward import sequence_inputs
from rlhand.replay.buffer import Draw, ReplayBuffer
from rlhand.rollout.batch import Rollout, concat_rollouts
from rlhand.rollout.rescoring import rescore


@dataclass
class Mixed:
    """An update batch and what replay needs of it after the update: the draw (which buffer rows
    the replayed ones are, their IS weights) and each replayed row's age in iterations."""

    batch: Rollout
    draw: Draw | None = None
    ages: Tensor | None = None


class NoReplay:
    """replay=off: the update batch is the rollout."""

    def mix(self, fresh: Rollout, step: int, models: Models, temperature: float, timer) -> tuple[Mixed, dict]:
        return Mixed(fresh), {}

    def after_update(self, mixed: Mixed, batch: Rollout, approx_kl: float, step: int) -> dict:
        return {}

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state) -> None:
        pass


class ExperienceReplay:
    """Two hooks on a PPO iteration: `mix` before the advantages (draw and re-score replayed rows),
    `after_update` after the update (priorities, storing the fresh rows, statistics).

    With several ranks each keeps its own buffer (its 1/N share, of its own samples) and draws
    its share of sample_size from it: a prioritized draw is proportional within the rank's buffer,
    and its IS weights are normalised by that buffer. An iteration replays only when every rank's
    buffer can serve its share, so all ranks train on batches of the same shape."""

    def __init__(self, cfg: ReplayConfig, buffer: ReplayBuffer, pad_id: int, device: torch.device, ctx: DistContext | None = None, is_truncation: float | None = 2.0):
        self.cfg, self.buffer, self.pad_id, self.device = cfg, buffer, pad_id, device
        self.ctx = ctx or DistContext()
        self.is_truncation = is_truncation  # algo.is_truncation: min(pi_prox / pi_behaviour, this)

    @torch.no_grad()
    def mix(self, fresh: Rollout, step: int, models: Models, temperature: float, timer) -> tuple[Mixed, dict]:
        """The update batch: the fresh rows, then replayed ones (if the buffers can serve them)."""
        ready = bool(self.ctx.min(torch.tensor(int(self.buffer.ready(self.cfg.sample_size, step)))))  # every rank can serve its share
        draw = self.buffer.draw(self.cfg.sample_size, step) if ready else None
        if draw is None:
            return Mixed(fresh), {"replay/sampled": 0}
        ages = step - self.buffer.data["step"][torch.from_numpy(draw.indices)].long()
        with timer("score_replay"):
            stored = self.buffer.rollout(draw.indices, self.device, self.pad_id)
            inputs = sequence_inputs(stored.prompt_ids, stored.prompt_mask, stored.response_ids, stored.response_mask)
            now = rescore(models, inputs, temperature, values=True)
        tis = truncated_is_weights(now.proximal, stored.behaviour_logprobs, self.is_truncation)
        per = draw.weights.to(self.device)
        replayed = stored.replace(
            proximal_logprobs=now.proximal,
            values=now.values,
            policy_weights=per.unsqueeze(-1) * tis * stored.response_mask,
            value_weights=per,
        )
        # Fresh rows keep the weights the rollout gave them (an engine's mismatch correction), else 1.
        fresh_weights = fresh.policy_weights if fresh.policy_weights is not None else fresh.response_mask.float()
        fresh = fresh.replace(
            policy_weights=fresh_weights,
            value_weights=torch.ones(len(fresh), device=self.device),
            stored_advantages=torch.zeros_like(fresh.behaviour_logprobs),
        )
        stats = {
            "replay/sampled": len(replayed) * self.ctx.world_size,
            "replay/is_weight_mean": mean(per, self.ctx).item(),
            "replay/beta": draw.beta,
            "replay/tis_mean": masked_mean(tis, replayed.response_mask, reducer=self.ctx).item(),
            "replay/tis_truncated_frac": truncated_fraction(now.proximal - stored.behaviour_logprobs, self.is_truncation, replayed.response_mask, self.ctx).item(),
            "replay/ess": effective_sample_size(replayed.policy_weights, replayed.response_mask, self.ctx).item(),
        }
        return Mixed(concat_rollouts([fresh, replayed], self.pad_id), draw, ages), stats

    def after_update(self, mixed: Mixed, batch: Rollout, approx_kl: float, step: int) -> dict:
        """After the update on `batch` (the mixed batch with its advantages): how far the replayed
        rows' advantages drifted, the KL-adaptive reuse cap, the drawn rows' new priorities, the fresh
        rows stored; the buffer's figures."""
        stats = self.advantage_drift(mixed, batch)
        self.buffer.set_reuse_cap(self.cfg.reuse_cap(approx_kl))  # replay.adaptive_reuse (the global approx_kl: the same on every rank)
        priorities = sequence_priorities(batch, self.cfg.priority_eps)
        if mixed.draw is not None:
            self.buffer.update_priorities(mixed.draw.indices, priorities[~batch.fresh])
        fresh = batch.only_fresh()
        raw_advantages = (fresh.returns - fresh.values) * fresh.response_mask  # GAE before whitening
        self.buffer.add(fresh.replace(advantages=raw_advantages), step, priorities[batch.fresh])
        cap = {"replay/reuse_cap": self.buffer.max_reuse} if self.cfg.adaptive_reuse else {}
        return {**stats, **self.buffer.stats(step, self.ctx), **cap}

    def advantage_drift(self, mixed: Mixed, batch: Rollout) -> dict[str, float]:
        """How far each replayed row's advantage now (the one this update used) is from the one it
        was stored with, by the row's age: the mean over rows of (A_now - A_stored) averaged over
        its tokens, signed and absolute, per age bucket (every rank's rows). With gae A_now is
        recomputed with the current critic and KL, with reinforce_pp with the current KL; a group
        estimator uses the stored one (0 by construction). Raw advantages (before whitening)."""
        if mixed.draw is None:
            return {}
        replayed = ~batch.fresh
        mask = batch.response_mask[replayed].float()
        gap = ((batch.returns - batch.values)[replayed] - batch.stored_advantages[replayed]) * mask
        per_row = gap.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        ages = mixed.ages.to(per_row.device)
        sums = []
        for low, high in AGE_BUCKETS:
            rows = (ages >= low) & (ages <= high)
            sums += [per_row[rows].sum(), per_row[rows].abs().sum(), rows.sum().to(per_row.dtype)]
        totals = self.ctx.sum(torch.stack(sums).double())
        stats = {}
        for i, (low, high) in enumerate(AGE_BUCKETS):
            signed, absolute, count = totals[3 * i : 3 * i + 3].tolist()
            if count:
                name = f"{low}" if low == high else f"{low}-{high}" if high < 10**6 else f"{low}+"
                stats[f"replay/adv_drift_age{name}"] = signed / count
                stats[f"replay/adv_drift_abs_age{name}"] = absolute / count
                stats[f"replay/adv_drift_rows_age{name}"] = count
        return stats

    def state_dict(self) -> dict:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state)


AGE_BUCKETS = ((1, 1), (2, 2), (3, 4), (5, 8), (9, 10**9))  # iterations since generation


def sequence_priorities(batch: Rollout, eps: float) -> Tensor:
    """Mean |raw GAE advantage| over each sample's tokens, plus eps (never 0)."""
    raw = (batch.returns - batch.values).abs() * batch.response_mask
    return raw.sum(dim=1) / batch.response_mask.sum(dim=1).clamp(min=1) + eps
