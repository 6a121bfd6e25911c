"""The PPO update: epochs x shuffled minibatches of clipped policy and value steps."""

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from rlhand.config.schema import AlgoConfig, KLPlacement
from rlhand.core.kl import kl_estimate
from rlhand.core.losses import agg_loss, clipped_policy_loss, clipped_value_loss, entropy_from_logits
from rlhand.core.masked import explained_variance, masked_mean
from rlhand.models.build import Models
from rlhand.models.concurrent import ModelThreads
from rlhand.models.forward import logits_and_values, response_logits, sequence_inputs, token_logprobs, token_values
from rlhand.models.value_head import SharedValueHead
from rlhand.rollout.batch import Rollout


@dataclass
class Optimizers:
    policy: torch.optim.Optimizer
    critic: torch.optim.Optimizer


def ppo_update(
    models: Models,
    optimizers: Optimizers,
    rollout: Rollout,
    algo: AlgoConfig,
    *,
    kl_coef: float,
    temperature: float,
    timer,
    autocast=nullcontext,
    threads: ModelThreads | None = None,
) -> dict[str, float]:
    """ppo_epochs passes, each a fresh permutation split into num_minibatches optimizer steps.
    The batch may be larger than rollout_batch_size (fresh + replayed samples)."""
    history: list[dict[str, Tensor]] = []
    stop = False
    device = rollout.response_ids.device
    used = torch.zeros(len(rollout), dtype=torch.bool, device=device)  # rows that reached an optimizer step
    for epoch in range(algo.ppo_epochs):
        order = torch.randperm(len(rollout), device=device)
        for index in order.split(len(rollout) // algo.num_minibatches):
            batch = rollout.select(index)
            stats = minibatch_step(
                models, optimizers, batch, algo, kl_coef=kl_coef, temperature=temperature, timer=timer, autocast=autocast, threads=threads
            )
            history.append(stats)
            used[index] = True
            if algo.target_kl is not None and stats["policy/approx_kl"].item() > 1.5 * algo.target_kl:
                stop = True
                break
        if stop:
            break
    means = torch.stack([torch.stack([h[key].float() for key in history[0]]) for h in history]).mean(dim=0).tolist()
    summary = dict(zip(history[0], means))
    summary["policy/ratio_first_minibatch"] = history[0]["policy/ratio"].item()
    summary["policy/optimizer_steps"] = len(history)
    summary["samples/used"] = int(used.sum())
    summary["policy/early_stopped"] = float(stop)
    summary["value/explained_variance"] = explained_variance(rollout.values, rollout.returns, rollout.response_mask).item()
    return summary


def minibatch_step(
    models: Models,
    optimizers: Optimizers,
    batch: Rollout,
    algo: AlgoConfig,
    *,
    kl_coef: float,
    temperature: float,
    timer,
    autocast=nullcontext,
    threads: ModelThreads | None = None,
) -> dict[str, Tensor]:
    """One optimizer step on one minibatch, accumulated over algo.grad_accum_steps micro-batches.

    Each micro-batch's loss is normalised by the token / sequence count of the whole minibatch, so
    the accumulated gradient equals the one-batch gradient (not a mean of per-micro-batch means).
    Stats stay 0-dim tensors (no device sync here); per-token stats are weighted by token share.
    With `threads` (and a critic of its own) the policy's and the critic's forward, backward and
    optimizer step run side by side, one core each; their losses share no parameter, so the
    gradients are those of the summed loss.
    """
    num_tokens, num_seqs = batch.response_mask.sum(), len(batch)
    side_by_side = threads is not None and not isinstance(models.critic, SharedValueHead)
    optimizers.policy.zero_grad(set_to_none=True)
    optimizers.critic.zero_grad(set_to_none=True)
    totals: dict[str, Tensor] = {}
    for micro in batch.split(algo.grad_accum_steps):
        if side_by_side:
            terms = LossTerms(micro, algo, kl_coef=kl_coef, num_tokens=num_tokens, num_seqs=num_seqs)
            inputs = sequence_inputs(micro.prompt_ids, micro.prompt_mask, micro.response_ids, micro.response_mask)
            with timer("update_forward"), autocast():  # the workers take up the caller's autocast
                (policy_losses, policy_stats), (value_losses, value_stats) = threads.run(
                    lambda: terms.policy(response_logits(models.policy, inputs, temperature)),
                    lambda: terms.value(token_values(models.critic, inputs)),
                )
            with timer("update_backward"):
                threads.run(policy_losses["total"].backward, value_losses["total"].backward)
            losses, stats = terms.combine(policy_losses, policy_stats, value_losses, value_stats)
        else:
            with timer("update_forward"), autocast():
                losses, stats = ppo_losses(
                    models, micro, algo, kl_coef=kl_coef, temperature=temperature, num_tokens=num_tokens, num_seqs=num_seqs
                )
            with timer("update_backward"):
                losses["total"].backward()
        share = micro.response_mask.sum() / num_tokens
        for name, value in losses.items():
            totals[f"loss/{name}"] = totals.get(f"loss/{name}", 0) + value.detach()
        for name, value in stats.items():
            totals[name] = totals.get(name, 0) + share * value
    with timer("optimizer_step"):
        pairs = (models.policy, optimizers.policy), (models.critic, optimizers.critic)
        jobs = [partial(_clip_and_step, model, optimizer, algo.max_grad_norm) for model, optimizer in pairs]
        totals["grad/policy_norm"], totals["grad/critic_norm"] = threads.run(*jobs) if side_by_side else [job() for job in jobs]
    return totals


def ppo_losses(
    models: Models,
    batch: Rollout,
    algo: AlgoConfig,
    *,
    kl_coef: float,
    temperature: float,
    num_tokens: Tensor | None = None,
    num_seqs: int | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The scalar loss terms of a (micro-)batch, with grad, and its detached statistics.

    `num_tokens` / `num_seqs` are the enclosing minibatch's counts (default: this batch's own).
    """
    terms = LossTerms(batch, algo, kl_coef=kl_coef, num_tokens=num_tokens, num_seqs=num_seqs)
    inputs = sequence_inputs(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    logits, values = logits_and_values(models.policy, models.critic, inputs, temperature)
    return terms.combine(*terms.policy(logits), *terms.value(values))


class LossTerms:
    """A (micro-)batch's PPO loss, split into the policy's terms and the critic's so that each
    model's side can be computed (and back-propagated) on its own. Each side's "total" is its
    share of the loss; combine() adds them up."""

    def __init__(self, batch: Rollout, algo: AlgoConfig, *, kl_coef: float, num_tokens: Tensor | None, num_seqs: int | None):
        self.batch, self.algo, self.kl_coef = batch, algo, kl_coef
        self.num_tokens, self.num_seqs = num_tokens, num_seqs

    def agg(self, per_token: Tensor) -> Tensor:
        return agg_loss(per_token, self.batch.response_mask, self.algo.loss_agg, num_tokens=self.num_tokens, num_seqs=self.num_seqs)

    def policy(self, logits: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        batch, algo, mask = self.batch, self.algo, self.batch.response_mask
        logprobs = token_logprobs(logits, batch.response_ids)
        pg_tokens, pg_stats = clipped_policy_loss(
            logprobs, batch.proximal_logprobs, batch.advantages, mask, clip_low=algo.clip_ratio_low, clip_high=algo.clip_ratio_high
        )
        if batch.policy_weights is not None:  # replay: decoupled-PPO IS x PER weights (detached)
            pg_tokens = pg_tokens * batch.policy_weights
        with torch.set_grad_enabled(algo.ent_coef > 0 and torch.is_grad_enabled()):
            entropy_tokens = entropy_from_logits(logits)
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

    def value(self, values: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        batch = self.batch
        vf_tokens, vf_stats = clipped_value_loss(values, batch.values, batch.returns, batch.response_mask, clip_range=self.algo.value_clip_ratio)
        if batch.value_weights is not None:  # replay: PER weights per sequence (detached)
            vf_tokens = vf_tokens * batch.value_weights.unsqueeze(-1)
        value = self.agg(vf_tokens)
        return {"value": value, "total": self.algo.vf_coef * value}, {"value/clipfrac": vf_stats["clipfrac"]}

    @staticmethod
    def combine(policy_losses, policy_stats, value_losses, value_stats) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        losses = {**policy_losses, **value_losses, "total": policy_losses["total"] + value_losses["total"]}
        return losses, {**policy_stats, **value_stats}


def _clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_norm: float | None) -> Tensor:
    norm = _clip(model, max_norm)
    optimizer.step()
    return norm


def _clip(model: torch.nn.Module, max_norm: float | None) -> Tensor:
    """Clip the global grad norm (max_norm None: measure only); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is None:  # clip_grad_norm_(inf) would still multiply every gradient by 1.0
        return torch.nn.utils.get_total_norm([p.grad for p in params])
    return torch.nn.utils.clip_grad_norm_(params, max_norm)
