"""How the PPO update runs: epochs x shuffled minibatches, each one optimizer step per learner,
accumulated over micro-batches. What the loss is lives in objective.py; how each model is stepped
in rlhand/run/learners.py."""

from contextlib import ExitStack, nullcontext

import torch
from torch import Tensor

from rlhand.config.schema import AlgoConfig
from rlhand.core.masked import LOCAL, Reducer, explained_variance
from rlhand.models.concurrent import ModelThreads
from rlhand.models.critic import Critic
from rlhand.models.forward import policy_forward, sequence_inputs
from rlhand.rollout.batch import Rollout
from rlhand.run.learners import Learners
from rlhand.stages.ppo.objective import PPOObjective, Terms


class PPOUpdate:
    """Runs the PPO epochs of one iteration on the policy and critic learners.

    With `threads` (CPU, 2+ threads, trainer.concurrent_models) and a critic with a forward of its
    own, the policy's and the critic's forward, backward and optimizer step run side by side, one
    worker each; their losses share no parameter, so the gradients are those of the summed loss.
    """

    def __init__(
        self,
        learners: Learners,
        critic: Critic,
        algo: AlgoConfig,
        *,
        timer,
        autocast=nullcontext,
        threads: ModelThreads | None = None,
        reducer: Reducer = LOCAL,
        group_size: int = 1,
        stratify: bool = False,
        chunk_bytes: int | None = None,
    ):
        self.learners, self.critic, self.algo = learners, critic, algo
        self.timer, self.autocast = timer, autocast
        self.threads = threads if critic.trained and not critic.reads_policy_hidden else None
        self.group_size, self.stratify = group_size, stratify
        self.chunk_bytes = chunk_bytes  # one chunk's logits through the output layer (rlhand/core/logprobs.py)
        # Each rank holds its share of every minibatch; counts, statistics and the target_kl
        # decision are over every rank's, so all ranks agree.
        self.reducer = reducer

    @property
    def policy(self):
        return self.learners.policy.module

    def __call__(self, batch: Rollout, *, kl_coef: float, temperature: float) -> dict[str, float]:
        """ppo_epochs passes, each a fresh permutation split into num_minibatches optimizer steps.
        The batch may be larger than rollout_batch_size (fresh + replayed samples). With several
        ranks each shuffles its own rows, and minibatch k is every rank's k-th share."""
        algo = self.algo
        history: list[dict[str, Tensor]] = []
        stop = False
        device = batch.response_ids.device
        used = torch.zeros(len(batch), dtype=torch.bool, device=device)  # rows that reached an optimizer step
        for _ in range(algo.ppo_epochs):
            for index in minibatch_indices(batch.fresh, algo.num_minibatches, self.group_size, self.stratify):
                stats = self.minibatch_step(batch.select(index), kl_coef=kl_coef, temperature=temperature)
                history.append(stats)
                used[index] = True
                if algo.target_kl is not None and self.reducer.sum(stats["policy/approx_kl"]).item() > 1.5 * algo.target_kl:
                    stop = True
                    break
            if stop:
                break
        keys = [key for key in history[0] if not key.startswith("grad/")]  # grad norms are global already
        partial = self.reducer.sum(torch.stack([torch.stack([h[key].float() for key in keys]) for h in history]))
        summary = dict(zip(keys, partial.mean(dim=0).tolist()))
        for key in ("grad/policy_norm", "grad/critic_norm"):
            if key in history[0]:
                summary[key] = torch.stack([h[key].float() for h in history]).mean().item()
        summary["policy/ratio_first_minibatch"] = partial[0, keys.index("policy/ratio")].item()
        summary["policy/optimizer_steps"] = len(history)
        summary["samples/used"] = int(self.reducer.sum(used.sum()))
        summary["policy/early_stopped"] = float(stop)
        if self.critic.trained:
            summary["value/explained_variance"] = explained_variance(batch.values, batch.returns, batch.response_mask, reducer=self.reducer).item()
        return summary

    def minibatch_step(self, batch: Rollout, *, kl_coef: float, temperature: float) -> dict[str, Tensor]:
        """One optimizer step per learner on one minibatch, accumulated over algo.grad_accum_steps
        micro-batches. Each micro-batch's loss is normalised by the token / sequence count of the
        whole minibatch, so the accumulated gradient equals the one-batch gradient (not a mean of
        per-micro-batch means). Stats stay 0-dim tensors (no device sync here); per-token stats
        are weighted by token share; with several ranks they are this rank's part of the global
        values (rank sums of them are the global ones: PPOUpdate reduces them)."""
        # The whole minibatch is every rank's share of it.
        num_tokens = self.reducer.sum(batch.response_mask.sum())
        num_seqs = self.reducer.sum(torch.tensor(len(batch), device=num_tokens.device))
        for learner in self.learners.all():
            learner.zero_grad()
        totals: dict[str, Tensor] = {}
        with ExitStack() as stack:
            for learner in self.learners.all():
                stack.enter_context(learner.training())
            self._accumulate(batch, totals, kl_coef, temperature, num_tokens, num_seqs)
        with self.timer("optimizer_step"):
            steps = [learner.step for learner in self.learners.all()]
            norms = self.threads.run(*steps) if self.threads else [step() for step in steps]
            totals.update(zip(("grad/policy_norm", "grad/critic_norm"), norms))
        return totals

    def _accumulate(self, batch: Rollout, totals: dict, kl_coef: float, temperature: float, num_tokens, num_seqs) -> None:
        """Forward and backward of every micro-batch, gradients adding up in .grad, stats in `totals`."""
        for micro in batch.split(self.algo.grad_accum_steps):
            objective = PPOObjective(micro, self.algo, kl_coef=kl_coef, num_tokens=num_tokens, num_seqs=num_seqs)
            inputs = sequence_inputs(micro.prompt_ids, micro.prompt_mask, micro.response_ids, micro.response_mask)
            if self.threads is not None:
                losses, stats = self._side_by_side(objective, inputs, temperature)
            else:
                with self.timer("update_forward"), self.autocast():
                    out = self._policy_forward(inputs, temperature, with_hidden=self.critic.reads_policy_hidden)
                    value_terms = objective.value(self.critic.values(inputs, out.hidden)) if self.critic.trained else None
                    losses, stats = objective.combine(objective.policy(out), value_terms)
                with self.timer("update_backward"):
                    self.learners.policy.backward(losses["total"])
            share = micro.response_mask.sum() / num_tokens
            for name, value in losses.items():
                totals[f"loss/{name}"] = totals.get(f"loss/{name}", 0) + value.detach()
            for name, value in stats.items():
                totals[name] = totals.get(name, 0) + share * value

    def _side_by_side(self, objective: PPOObjective, inputs, temperature: float) -> Terms:
        policy, critic = self.learners.policy, self.learners.critic
        with self.timer("update_forward"), self.autocast():  # the workers take up the caller's autocast
            policy_terms, value_terms = self.threads.run(
                lambda: objective.policy(self._policy_forward(inputs, temperature)),
                lambda: objective.value(self.critic.values(inputs)),
            )
        with self.timer("update_backward"):
            self.threads.run(lambda: policy.backward(policy_terms[0]["total"]), lambda: critic.backward(value_terms[0]["total"]))
        return objective.combine(policy_terms, value_terms)

    def _policy_forward(self, inputs, temperature: float, with_hidden: bool = False):
        return policy_forward(
            self.policy, inputs, temperature, entropy=True, entropy_grad=self.algo.ent_coef > 0, with_hidden=with_hidden, chunk_bytes=self.chunk_bytes
        )


def ppo_losses(policy, critic: Critic, batch: Rollout, algo: AlgoConfig, *, kl_coef: float, temperature: float) -> Terms:
    """The loss terms (with grad) and stats of one batch on its own: the objective applied to one
    forward of each model. For tests and analysis; the update goes through PPOUpdate."""
    objective = PPOObjective(batch, algo, kl_coef=kl_coef)
    inputs = sequence_inputs(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    out = policy_forward(policy, inputs, temperature, entropy=True, entropy_grad=algo.ent_coef > 0, with_hidden=critic.reads_policy_hidden)
    value_terms = objective.value(critic.values(inputs, out.hidden)) if critic.trained else None
    return objective.combine(objective.policy(out), value_terms)


def minibatch_indices(fresh: Tensor, num_minibatches: int, group_size: int = 1, stratify: bool = False) -> list[Tensor]:
    """One epoch's minibatches: row indices of a fresh permutation, split in equal parts.

    With groups (group_size > 1) every prompt's group of fresh rows stays together: the groups are
    shuffled as units and each minibatch takes an equal share of them plus an equal share of the
    shuffled replayed rows (config checks make both shares whole). A group's advantages (GRPO, RLOO)
    are relative to each other; kept together, each minibatch's gradient sees both sides of every
    baseline, as a one-minibatch GRPO update does. `stratify` (replay.fresh_fraction) takes the same
    equal shares without groups, so every minibatch holds the set share of fresh rows. Otherwise
    this is the plain shuffle."""
    device = fresh.device
    if group_size == 1 and not stratify:
        order = torch.randperm(len(fresh), device=device)
        return list(order.split(len(fresh) // num_minibatches))
    fresh_rows = torch.nonzero(fresh).squeeze(1)
    groups = fresh_rows.view(-1, group_size)
    groups = groups[torch.randperm(len(groups), device=device)]
    fresh_parts = groups.reshape(-1).split(len(fresh_rows) // num_minibatches)
    replayed = torch.nonzero(~fresh).squeeze(1)
    replayed = replayed[torch.randperm(len(replayed), device=device)]
    if len(replayed) == 0:
        return list(fresh_parts)
    replayed_parts = replayed.split(len(replayed) // num_minibatches)
    return [torch.cat([f, r]) for f, r in zip(fresh_parts, replayed_parts)]
