"""The rollout side of a PPO iteration: which prompts this rank samples, the generation engine
(built after the models and any resume; its weights pushed after every update), the sharded policy
gathered while sampling, group and DAPO's dynamic sampling, and the scoring forwards
(rlhand/rollout/collect.py)."""

from collections.abc import Callable

import torch

from rlhand.config.schema import TrainConfig
from rlhand.data.mixture import build_sampler
from rlhand.data.sampler import left_pad
from rlhand.distributed.context import DistContext
from rlhand.distributed.sharding import gathered
from rlhand.models.build import Models
from rlhand.rollout.batch import Rollout
from rlhand.rollout.collect import collect_rollout
from rlhand.rollout.engines import HFEngine
from rlhand.rollout.groups import DynamicSampling, repeat_groups


class RolloutCollector:
    def __init__(
        self, cfg: TrainConfig, models: Models, scorer: Callable, tokenizer, prompt_ids: list[list[int]], ctx: DistContext, device, timer, mixture=None, prompts=None, stop_ids=None
    ):
        self.cfg, self.models, self.scorer, self.tokenizer = cfg, models, scorer, tokenizer
        self.prompt_ids, self.ctx, self.device, self.timer = prompt_ids, ctx, device, timer
        # Each prompt as read (conversation, columns, label: what the scorer receives), and the ids a response ends at.
        self.prompts, self.stop_ids = prompts, stop_ids or (tokenizer.eos_token_id,)
        # mixture: (each prompt's source, the sources' weights) for task.mixture, else None
        self.sampler = build_sampler(*(mixture or (None, None)), len(prompt_ids), cfg.seed)
        self.group_size = cfg.generation.samples_per_prompt
        self.engine = HFEngine(models)  # until start(): the engine of generation.engine
        self.stale = True  # the engine has not seen the policy's current weights

    def start(self, engine) -> None:
        self.engine, self.stale = engine, True

    def weights_changed(self) -> None:
        """After an update: an engine with weights of its own gets them now (so that the iteration's
        time includes the push); the hf loop samples from the policy itself."""
        self.stale = True
        if not self.engine.exact:
            with self.timer("weight_sync"):
                self.sync()

    def sync(self) -> None:
        if self.stale:
            self.engine.sync(self.models.policy)
            self.stale = False

    def sampling_modules(self) -> list[torch.nn.Module]:
        """What stays gathered (whole on every rank) while a rank samples on its own."""
        modules = [self.models.policy]
        if self.models.critic.reads_policy_hidden:
            modules.append(self.models.critic.module)
        return modules

    def collect_batch(self) -> tuple[Rollout, list[Rollout], dict]:
        """(the iteration's training rows, every rollout sampled for them, sampling stats). With
        algo.dynamic_sampling, groups of equal scores are dropped and more prompts sampled
        (rlhand/rollout/groups.py); otherwise one rollout, which is both."""
        if not self.cfg.algo.dynamic_sampling:
            rollout = self.collect()
            return rollout, [rollout], {}
        dynamic = DynamicSampling(self.group_size, self.cfg.algo.rollout_batch_size // self.ctx.world_size, self.tokenizer.pad_token_id)
        for _ in range(self.cfg.algo.dynamic_max_rounds):
            # Every rank samples as many rounds, so the prompt stream stays shared.
            if bool(self.ctx.min(torch.tensor(int(dynamic.add(self.collect()))))):
                break
        return dynamic.batch(), dynamic.sampled, dynamic.stats(self.ctx)

    def collect(self) -> Rollout:
        """This rank's share of the iteration's prompts, sampled and scored: rollout_batch_size
        responses, generation.samples_per_prompt of each prompt in consecutive rows. The policy (and
        a shared value head) stay gathered while sampling, so each rank generates at its own pace."""
        prompts = self.cfg.algo.rollout_batch_size // self.group_size
        indices = repeat_groups(self.sampler.next_indices(prompts)[self.ctx.shard(prompts)], self.group_size)
        ids, mask = left_pad([self.prompt_ids[i] for i in indices], self.tokenizer.pad_token_id)
        rows = [self.prompts[i] for i in indices] if self.prompts is not None else None
        self.sync()
        with gathered(self.sampling_modules()):
            return collect_rollout(
                self.models,
                self.scorer,
                ids.to(self.device),
                mask.to(self.device),
                self.cfg.generation,
                eos_ids=self.stop_ids,
                pad_id=self.tokenizer.pad_token_id,
                timer=self.timer,
                engine=self.engine,
                is_truncation=self.cfg.algo.is_truncation,
                rows=rows,
                source_rows=torch.tensor(indices, dtype=torch.long, device=self.device),
            )
