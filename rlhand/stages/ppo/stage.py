"""The RL stage: PPO on the policy against a reward, kept near a frozen reference. One iteration:
prompts -> rollout (rlhand/rollout/collector.py) -> replay's mix -> KL-shaped rewards and
advantages -> the PPO update -> replay's after-update -> metrics. The run around it (folder,
checkpoints, validation cadence, best and final models) is rlhand/run/lifecycle.py.

With several ranks (torchrun) every rank runs this on its own share of each batch:
rollout_batch_size responses per iteration in all, each rank sampling its contiguous share. Every
statistic is reduced over ranks before it is logged or acted on, so all ranks take the same
decisions.
"""

import time
from pathlib import Path

import torch

from rlhand.checkpoint.store import CheckpointError
from rlhand.config.schema import TrainConfig
from rlhand.data.mixture import mixture_counts
from rlhand.distributed.sharding import gathered
from rlhand.evaluation.validate import readable_rows, validate
from rlhand.reporting.memory import release_cached_memory
from rlhand.rewards.combined import CombinedScorer
from rlhand.rewards.function import failure_stats, function_scorers
from rlhand.rewards.retokenize import RetokenizingScorer
from rlhand.rollout.collector import RolloutCollector
from rlhand.rollout.engines import check_engine
from rlhand.rollout.mismatch import mismatch_stats
from rlhand.run.environment import seed_everything
from rlhand.run.saving import save_models
from rlhand.run.stage import RunEnv
from rlhand.stages.ppo import setup
from rlhand.stages.ppo.advantages import assign_advantages
from rlhand.stages.ppo.statistics import sampled_stats, summary_line
from rlhand.stages.ppo.update import PPOUpdate


class PPOStage:

    @classmethod
    def prepare(cls, cfg: TrainConfig, ctx, device: torch.device) -> setup.RunInputs:
        setup.check_layout(cfg, ctx)
        inputs = setup.prepare_inputs(cfg)
        check_engine(cfg, inputs.tokenizer, device)
        return inputs

    @classmethod
    def rank_local_state(cls, cfg: TrainConfig) -> bool:
        return cfg.replay.enabled  # each rank's replay buffer is its own

    @classmethod
    def check_memory(cls, cfg: TrainConfig, inputs: setup.RunInputs, env: RunEnv) -> str:
        return setup.check_memory(cfg, inputs, env.ctx, env.layout, env.device)

    def __init__(self, cfg: TrainConfig, inputs: setup.RunInputs, env: RunEnv):
        self.cfg, self.inputs, self.env = cfg, inputs, env
        ctx = self.dist = env.ctx
        self.models, self.scorer, self.normalizer = setup.prepare_models(cfg, inputs, env.device, ctx)
        setup.distribute_models(cfg, self.models, ctx, env.layout, env.device)
        ctx.reseed_for_rank(cfg.seed, seed_everything)  # ranks built identical models; from here each samples its own
        self.learners = setup.build_learners(cfg, self.models, ctx, env.layout)
        self.kl_ctl = setup.build_kl_controller(cfg)
        mixture = (inputs.prompt_labels, inputs.weights) if inputs.sources else None
        self.collector = RolloutCollector(
            cfg, self.models, self.scorer, inputs.tokenizer, inputs.prompt_ids, ctx, env.device, env.timer, mixture, prompts=inputs.prompts, stop_ids=inputs.stop_ids
        )
        self.replay = setup.build_replay(cfg, inputs, self.models, env.device, ctx)  # NoReplay when replay=off
        self.update = PPOUpdate(
            self.learners,
            self.models.critic,
            cfg.algo,
            timer=env.timer,
            autocast=env.autocast,
            threads=setup.model_threads(cfg, env.device, env.layout),  # None: one model at a time
            reducer=ctx,
            group_size=cfg.generation.samples_per_prompt,
            stratify=cfg.replay.enabled and cfg.replay.fresh_fraction is not None,
            chunk_bytes=self.models.limits.logit_chunk_bytes,
        )
        self.totals = {"samples/generated": 0, "samples/trained": 0}
        self.last_samples: list[dict] = []
        self.val_scorers = setup.build_val_scorers(cfg, inputs, env.device)

    def start(self) -> None:
        """The generation engine, from the weights just built or resumed."""
        self.collector.start(setup.build_generation_engine(self.cfg, self.models, self.inputs, self.env.device, self.dist))

    def describe(self) -> str:
        cfg = self.cfg
        estimator = "" if self.models.has_critic else f" with {cfg.algo.estimator}, no critic"
        if cfg.generation.samples_per_prompt > 1:
            estimator += f", {cfg.generation.samples_per_prompt} samples per prompt"
        scored = ""
        reward = self.normalizer.inner
        if isinstance(reward, RetokenizingScorer):  # which path a learned reward takes, said once
            scored = f"; texts tokenized again for the reward model{' with its chat template' if reward.chat_template else ''}"
        if self.rendered:
            scored += f"; prompts rendered by the chat template, responses end at ids {list(self.inputs.stop_ids)}"
        return f"rlhand: {cfg.algo.name}{estimator} (replay {cfg.replay.name}) on {cfg.task.name}{scored}"

    @property
    def rendered(self) -> bool:
        """Whether the prompts went through the chat template (then samples show its control tokens)."""
        return any(p.rendered for p in self.inputs.prompts[:1])

    def plot_title(self) -> str:
        return f"{self.cfg.algo.name} / replay {self.cfg.replay.name} / seed {self.cfg.seed}"

    def step(self, step: int) -> dict:
        cfg, env, started = self.cfg, self.env, time.perf_counter()
        if isinstance(self.scorer, CombinedScorer):
            self.scorer.reset()  # validation's batches are not this iteration's
        with env.autocast():
            rollout, sampled, sampling_stats = self.collector.collect_batch()
        if cfg.eval.samples_every and step % cfg.eval.samples_every == 0:
            self.last_samples = self.readable(readable_rows(sampled[0], {}), "train")
        rollout_s = time.perf_counter() - started
        release_cached_memory(env.device, cfg.trainer.empty_cache)
        with env.autocast():
            mixed, replay_stats = self.replay.mix(rollout, step, self.models, cfg.generation.temperature, env.timer)
        kl_coef = self.kl_ctl.value
        with env.timer("advantages"):
            batch, kl_stats = assign_advantages(mixed.batch, cfg.algo, kl_coef, reducer=self.dist, group_size=cfg.generation.samples_per_prompt)
        update_started = time.perf_counter()
        update_stats = self.update(batch, kl_coef=kl_coef, temperature=cfg.generation.temperature)
        update_s = time.perf_counter() - update_started
        self.collector.weights_changed()
        self.kl_ctl.update(kl_stats["kl/ref"], cfg.algo.rollout_batch_size)
        replay_stats.update(self.replay.after_update(mixed, batch, update_stats["policy/approx_kl"], step))
        self.count_samples(sampling_stats, update_stats.pop("samples/used"))
        stats = sampled_stats(sampled, self.dist, with_values=self.models.has_critic)
        stats.update(sampling_stats)
        stats.update(mismatch_stats(rollout, cfg.algo.is_truncation, self.dist))
        stats.update(mixture_counts(self.collector.sampler, self.inputs.sources or []))
        stats.update(self.normalizer.unnormalized_mean(self.dist))
        if isinstance(self.scorer, CombinedScorer):
            stats.update(self.scorer.component_means(self.dist))
        stats.update(failure_stats(self.scorer, self.dist))
        del rollout, batch, sampled, mixed  # the iteration's activations and rollout tensors go before the next phase
        release_cached_memory(env.device, cfg.trainer.empty_cache)
        times = {
            "time/rollout_s": rollout_s,
            "time/update_s": update_s,
            **{f"time/{phase}_s": seconds for phase, seconds in env.timer.pop().items()},
            "time/iteration_s": time.perf_counter() - started,
        }
        return {
            **stats,
            **kl_stats,
            **update_stats,
            "kl/coef": kl_coef,
            **self.totals,
            "replay/sample_efficiency": self.totals["samples/trained"] / self.totals["samples/generated"],
            **replay_stats,
            **self.dist.slowest(times),
            **({"dist/world_size": self.dist.world_size} if env.layout.ranks > 1 else {}),
        }

    def count_samples(self, sampling_stats: dict, used: int) -> None:
        """samples/generated counts every sampling round; samples/trained the samples that reached at
        least one optimizer step this iteration, each once however many epochs used it (target_kl
        can end an iteration early): plain PPO trains 1x what it generates."""
        self.totals["samples/generated"] += self.cfg.algo.rollout_batch_size * sampling_stats.get("dynamic/rounds", 1)
        self.totals["samples/trained"] += used

    def validate(self, step: int) -> dict:
        """val/* on the held-out prompts, val/<set>/* on each of eval.prompt_sets; samples from the former."""
        cfg, env, inputs = self.cfg, self.env, self.inputs
        raw: list[dict] = []  # rank 0's first validation batch, for samples()
        stats = {}
        self.collector.sync()
        with env.autocast(), gathered(self.collector.sampling_modules()), self.normalizer.frozen():
            rows = {"": inputs.val_prompts, **inputs.val_set_prompts}
            for name, prompts in {"": inputs.val_prompt_ids, **inputs.val_sets}.items():
                mine = self.dist.shard(len(prompts))
                figures = validate(
                    self.models,
                    self.scorer,
                    prompts[mine],
                    cfg.generation,
                    batch_size=cfg.algo.rollout_batch_size // self.dist.world_size,
                    rows=rows[name][mine] if rows.get(name) else None,
                    eos_ids=inputs.stop_ids,
                    pad_id=inputs.tokenizer.pad_token_id,
                    seed=cfg.seed + 1 + self.dist.rank,
                    device=env.device,
                    timer=env.timer,
                    reducer=self.dist,
                    engine=self.collector.engine,
                    scorers=self.val_scorers,
                    samples=None if name else raw,
                )
                stats.update({key.replace("val/", f"val/{name}/", 1) if name else key: value for key, value in figures.items()})
        self.last_samples = self.readable(raw, "val")
        env.timer.pop()  # validation phases are not training time
        release_cached_memory(env.device, cfg.trainer.empty_cache)
        return stats

    def readable(self, rows: list[dict], split: str) -> list[dict]:
        decode = self.inputs.tokenizer.decode
        return [
            {"split": split, "prompt": decode(r["prompt_ids"], skip_special_tokens=not self.rendered), "response": decode(r["response_ids"], skip_special_tokens=True), "scores": r["scores"]}
            for r in rows[: self.cfg.eval.samples]
        ]

    def samples(self) -> list[dict]:
        """The last validation's first eval.samples prompts, responses (to the EOS) and scores, as text."""
        return self.last_samples if self.dist.is_main else []

    def state_dict(self) -> dict:
        return {
            "totals": dict(self.totals),
            "kl_controller": self.kl_ctl.state_dict(),
            "sampler": self.collector.sampler.state_dict(),
            "reward_normalizer": self.normalizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.collector.sampler.load_state_dict(state["sampler"])
        self.totals = dict(state["totals"])
        self.normalizer.load_state_dict(state.get("reward_normalizer") or {})  # absent in checkpoints before reward.normalize=running

    def rank_state_dict(self):
        return self.replay.state_dict()

    def load_rank_state_dict(self, state) -> None:
        if self.cfg.replay.enabled and state is None:
            raise CheckpointError(f"the checkpoint has no replay buffer, but replay is on (replay={self.cfg.replay.name})")
        self.replay.load_state_dict(state)

    def save(self, folder: Path, meta: dict | None = None) -> str:
        save_models(self.models, self.inputs.tokenizer, folder, self.dist, meta=meta)
        return "policy and critic" if self.models.has_critic else "policy"

    def summary(self, history: list[dict]) -> str:
        return summary_line(history)

    def close(self) -> None:
        try:
            self.collector.engine.close()
        finally:
            for scorer in function_scorers(self.scorer):
                scorer.close()  # its worker processes, if any
