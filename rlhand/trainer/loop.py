"""The PPO iteration: prompts -> rollout -> rewards and advantages -> update -> log, plus the
features every preset shares: validation, early stopping, checkpoints and resume, best model.

With several ranks (torchrun) every rank runs this same loop on its own share of each batch:
rollout_batch_size prompts per iteration in all, each rank sampling its contiguous share. Every
statistic is reduced over ranks before it is logged or acted on, so all ranks take the same
decisions; rank 0 alone writes logs, metrics, plots and the final models.
"""

import json
import os
import time
import traceback
from pathlib import Path

import torch

from rlhand.checkpoint.resume import check_same_layout, check_same_model, config_differences, find_resume_checkpoint
from rlhand.checkpoint.rng import capture_rng, restore_rng
from rlhand.checkpoint.store import CheckpointError, checkpoint_step
from rlhand.checkpoint.training import load_learners, read_config, read_rank_state, read_training_state, save_training_checkpoint
from rlhand.config.load import config_dict
from rlhand.config.schema import TrainConfig
from rlhand.core.masked import LOCAL, Reducer, masked_mean, mean, std
from rlhand.data.sampler import PromptSampler, left_pad
from rlhand.distributed import context
from rlhand.distributed.layout import Parallel, resolve_layout
from rlhand.distributed.sharding import gathered
from rlhand.errors import UserError, writing
from rlhand.evaluation.early_stopping import EarlyStopping
from rlhand.evaluation.validate import validate
from rlhand.reporting.memory import memory_stats, release_cached_memory, reset_peak_memory
from rlhand.reporting.run_logger import RunLogger, SilentLogger
from rlhand.reporting.timer import PhaseTimer
from rlhand.rollout.batch import Rollout, concat_rollouts
from rlhand.rollout.collect import collect_rollout
from rlhand.rollout.engines import check_engine
from rlhand.rollout.groups import DynamicSampling, repeat_groups
from rlhand.rollout.mismatch import mismatch_stats
from rlhand.trainer import setup
from rlhand.trainer.advantages import assign_advantages
from rlhand.trainer.run_folder import claim_run_folder
from rlhand.trainer.save import adopt_best, save_models
from rlhand.trainer.schedules import LRSchedule
from rlhand.trainer.update import PPOUpdate


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.dist = ctx = context.current()
        self.config = {**config_dict(cfg), "world_size": ctx.world_size}
        self.notes: list[str] = []  # warnings raised before the run logger exists
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        self.device = setup.resolve_device(cfg.trainer.device, ctx)
        self.autocast = setup.autocast_context(cfg, self.device)
        # Everything that can be wrong on disk is checked before any model is built.
        setup.check_layout(cfg, ctx)
        self.inputs = setup.prepare_inputs(cfg)
        check_engine(cfg, self.inputs.tokenizer, self.device)
        self.resume_from = self.claim_folder()
        self.layout = resolve_layout(cfg.trainer, ctx.world_size, ctx.local_world_size)
        self.fit_line = setup.check_memory(cfg, self.inputs, ctx, self.layout, self.device)  # printed before any model loads
        setup.seed_everything(cfg.seed)
        self.models, self.scorer = setup.prepare_models(cfg, self.inputs, self.device)
        setup.distribute_models(cfg, self.models, ctx, self.layout, self.device)
        ctx.reseed_for_rank(cfg.seed, setup.seed_everything)  # ranks built identical models; from here each samples its own
        self.learners = setup.build_learners(cfg, self.models, ctx, self.layout)
        self.lr_schedule = LRSchedule(cfg.scheduler, [learner.optimizer for learner in self.learners.all()], cfg.trainer.max_steps)
        self.kl_ctl = setup.build_kl_controller(cfg)
        self.sampler = PromptSampler(len(self.inputs.prompt_ids), cfg.seed)
        self.early_stopping = EarlyStopping(cfg.early_stop.patience, cfg.early_stop.threshold)
        self.replay = setup.build_replay(cfg, self.inputs, self.models, self.device, ctx)  # None when replay=off
        self.timer = PhaseTimer(self.device)
        self.threads = setup.model_threads(cfg, self.device, self.layout)  # None: one model at a time
        self.group_size = cfg.generation.samples_per_prompt
        self.update = PPOUpdate(
            self.learners,
            self.models.critic,
            cfg.algo,
            timer=self.timer,
            autocast=self.autocast,
            threads=self.threads,
            reducer=ctx,
            group_size=self.group_size,
            stratify=cfg.replay.enabled and cfg.replay.fresh_fraction is not None,
            chunk_bytes=self.models.limits.logit_chunk_bytes,
        )
        self.step, self.stopped_early = 0, False
        self.last_checkpoint: Path | None = None  # the newest checkpoint of this trajectory, for error messages
        self.totals = {"samples/generated": 0, "samples/trained": 0}
        self.history: list[dict] = []
        if self.resume_from is not None:
            self.last_checkpoint = self.resume_from
            self.resume(self.resume_from)
        # Last, so that a fault before it leaves no engine behind; it starts from the weights just loaded.
        self.engine = setup.build_generation_engine(cfg, self.models, self.inputs, self.device, ctx)
        self.engine_stale = True

    def claim_folder(self) -> Path | None:
        """The checkpoint to resume from, after checking that this run may write its folder. Rank 0
        decides (it alone tidies interrupted writes) and every rank takes its answer, error included."""
        cfg, ctx = self.cfg, self.dist
        decision: tuple = (None, [], None)
        if ctx.is_main:
            notes: list[str] = []
            try:
                found = find_resume_checkpoint(cfg.resume, self.run_dir, notes.append)
                claim_run_folder(self.run_dir, cfg.resume, found)
                if found is not None:
                    check_same_model(found, self.config)
                    check_same_layout(found, ctx.world_size, cfg.replay.enabled)
                decision = (found, notes, None)
            except UserError as err:
                decision = (None, notes, err)
        found, notes, error = ctx.broadcast_object(decision)
        if error is not None:
            raise error
        self.notes.extend(notes)
        return found

    def resume(self, folder: Path) -> None:
        state = read_training_state(folder)
        load_learners(folder, self.learners.named())
        written_by = state["world_size"]
        if written_by != self.dist.world_size:
            self.notes.append(
                f"{folder} was written by {written_by} processes and resumes on {self.dist.world_size}: "
                "the weights, optimizer and schedule continue exactly, the random streams do not"
            )
        rank_state = read_rank_state(folder, self.dist.rank if written_by == self.dist.world_size else 0)
        self.load_state_dict(state, rank_state, restore_random=written_by == self.dist.world_size)
        changed = config_differences(read_config(folder), self.config)
        self.notes.extend(f"config differs from the checkpoint's: {line}" for line in changed)
        self.adopt_best_model()

    def state_dict(self) -> dict:
        """The trainer's global state besides the learners' (model and optimizer, checkpointed apart
        and sharded): the same on every rank. Each stateful part gives its own state."""
        return {
            "step": self.step,
            "stopped_early": self.stopped_early,
            "totals": dict(self.totals),
            "history": self.history,
            "lr_schedule": self.lr_schedule.state_dict(),
            "kl_controller": self.kl_ctl.state_dict(),
            "sampler": self.sampler.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
        }

    def rank_state_dict(self) -> dict:
        """What this rank holds alone: its random streams and its share of the replay buffer."""
        return {"rng": capture_rng(), "replay": self.replay.state_dict() if self.replay is not None else None}

    def load_state_dict(self, state: dict, rank_state: dict, restore_random: bool = True) -> None:
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.sampler.load_state_dict(state["sampler"])
        self.totals = dict(state["totals"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.history = list(state["history"])
        if self.replay is not None:
            if rank_state["replay"] is None:
                raise CheckpointError(f"{self.resume_from}: has no replay buffer, but replay is on (replay={self.cfg.replay.name})")
            self.replay.load_state_dict(rank_state["replay"])
        self.step, self.stopped_early = state["step"], state["stopped_early"]
        if restore_random:
            restore_rng(rank_state["rng"])  # last: building the trainer drew from the same generators

    def adopt_best_model(self) -> None:
        """Resuming another run's checkpoint into this folder: bring its best/ along when it matches."""
        source_run = self.resume_from.parent.parent  # <run>/checkpoints/step_N
        best_step = self.early_stopping.best_step
        if source_run.resolve() == self.run_dir.resolve() or not best_step or not self.dist.is_main:
            return
        if not adopt_best(source_run, self.run_dir, best_step):
            self.notes.append(
                f"best model (step {best_step}) not found in {source_run}/best; best/ starts with the next improvement"
            )

    def fit(self) -> list[dict]:
        cfg, ctx = self.cfg, self.dist
        resumed = self.resume_from is not None
        # metrics.jsonl and TensorBoard are rewritten up to this step (0 on a fresh start): a resume drops
        # the rows an interrupted run wrote after its checkpoint, a fresh restart (resume=auto, no
        # checkpoint yet) the rows of the attempt that crashed.
        log = RunLogger(cfg, self.run_dir, self.config, self.history, self.step) if ctx.is_main else SilentLogger()
        self.save_config()
        ranks = f", {ctx.world_size} ranks ({self.layout.strategy.value})" if self.layout.strategy is not Parallel.single else ""
        estimator = "" if self.models.has_critic else f" with {cfg.algo.estimator}, no critic"
        if self.group_size > 1:
            estimator += f", {self.group_size} samples per prompt"
        log.info(
            f"rlhand: {cfg.algo.name}{estimator} (replay {cfg.replay.name}) on {cfg.task.name}, {cfg.trainer.max_steps} steps, "
            f"device {self.device}{ranks}, run dir {self.run_dir}"
        )
        log.text_only(self.fit_line)
        for note in self.notes:
            log.warning(note)
        if resumed:
            log.info(f"resumed from {self.resume_from} at step {self.step}")
        elif cfg.resume == "auto":
            log.info("resume=auto: no checkpoint in this run folder, starting fresh")
        release_cached_memory(self.device, cfg.trainer.empty_cache)  # what loading the models left behind
        reset_peak_memory(self.device)
        try:
            while self.step < cfg.trainer.max_steps and not self.stopped_early:
                self.step += 1
                metrics = self.train_step()
                if cfg.eval.every and (self.step % cfg.eval.every == 0 or self.step == cfg.trainer.max_steps):
                    metrics.update(self.evaluate(log))
                metrics.update(self.slowest(memory_stats(self.device)))  # peaks of this iteration, validation included
                self.history.append(metrics)
                log.metrics(metrics)
                if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0:
                    self.checkpoint(log)
            if cfg.checkpoint.every and (self.last_checkpoint is None or checkpoint_step(self.last_checkpoint) != self.step):
                self.checkpoint(log)
            self.finish(log)
        except KeyboardInterrupt:
            log.error(f"interrupted at step {self.step}")
            raise
        except BaseException:
            log.error(traceback.format_exc())
            raise
        finally:
            self.engine.close()
            log.close()
        return self.history

    def train_step(self) -> dict:
        cfg, started = self.cfg, time.perf_counter()
        with self.autocast():
            rollout, sampled, sampling_stats = self.collect_batch()
        rollout_s = time.perf_counter() - started
        release_cached_memory(self.device, cfg.trainer.empty_cache)
        batch, replay_stats = rollout, {}
        if self.replay is not None:
            with self.autocast():
                batch, replay_stats = self.replay.extend(rollout, self.step, self.models, cfg.generation.temperature, self.timer)
        kl_coef = self.kl_ctl.value
        with self.timer("advantages"):
            batch, kl_stats = assign_advantages(batch, cfg.algo, kl_coef, reducer=self.dist, group_size=self.group_size)
        if self.replay is not None:
            replay_stats.update(self.replay.advantage_drift(batch))
        update_started = time.perf_counter()
        update_stats = self.update(batch, kl_coef=kl_coef, temperature=cfg.generation.temperature)
        update_s = time.perf_counter() - update_started
        self.engine_stale = True
        if not self.engine.exact:  # push the new weights now, so that the iteration's time includes it
            with self.timer("weight_sync"):
                self.sync_engine()
        self.kl_ctl.update(kl_stats["kl/ref"], cfg.algo.rollout_batch_size)
        lr = self.lr_schedule.lr
        self.lr_schedule.step()
        if self.replay is not None:
            self.replay.adapt_reuse(update_stats["policy/approx_kl"])
            self.replay.after_update(batch, self.step)
            replay_stats.update(self.replay.stats(self.step))
        self.totals["samples/generated"] += cfg.algo.rollout_batch_size * sampling_stats.get("dynamic/rounds", 1)
        # Samples that reached at least one optimizer step this iteration, each counted once however
        # many epochs used it (target_kl can end an iteration early): plain PPO trains 1x what it generates.
        self.totals["samples/trained"] += update_stats.pop("samples/used")
        stats = sampled_stats(sampled, self.dist, with_values=self.models.has_critic)
        stats.update(sampling_stats)
        stats.update(mismatch_stats(rollout, cfg.generation.is_truncation, self.dist))
        del rollout, batch, sampled  # the iteration's activations and rollout tensors go before the next phase
        release_cached_memory(self.device, cfg.trainer.empty_cache)
        times = {
            "time/rollout_s": rollout_s,
            "time/update_s": update_s,
            **{f"time/{phase}_s": seconds for phase, seconds in self.timer.pop().items()},
            "time/iteration_s": time.perf_counter() - started,
        }
        return {
            "step": self.step,
            **stats,
            **kl_stats,
            **update_stats,
            "kl/coef": kl_coef,
            "lr": lr,
            **self.totals,
            "replay/sample_efficiency": self.totals["samples/trained"] / self.totals["samples/generated"],
            **replay_stats,
            **self.slowest(times),
            **({"dist/world_size": self.dist.world_size} if self.layout.strategy is not Parallel.single else {}),
        }

    def slowest(self, figures: dict[str, float]) -> dict[str, float]:
        """Times and memory peaks: the largest over ranks (the slowest rank sets the pace)."""
        keys = sorted(figures)
        worst = self.dist.max(torch.tensor([float(figures[k]) for k in keys], dtype=torch.float64))
        return dict(zip(keys, worst.tolist()))

    def sync_engine(self) -> None:
        """The generation engine samples from the policy's current weights (vLLM: pushed into it)."""
        if self.engine_stale:
            self.engine.sync(self.models.policy)
            self.engine_stale = False

    def collect_batch(self) -> tuple[Rollout, list[Rollout], dict]:
        """(the iteration's training rows, every rollout sampled for them, sampling stats). With
        algo.dynamic_sampling, groups of equal scores are dropped and more prompts sampled
        (rlhand/rollout/groups.py); otherwise one rollout, which is both."""
        if not self.cfg.algo.dynamic_sampling:
            rollout = self.collect()
            return rollout, [rollout], {}
        dynamic = DynamicSampling(self.group_size, self.cfg.algo.rollout_batch_size // self.dist.world_size, self.inputs.tokenizer.pad_token_id)
        for _ in range(self.cfg.algo.dynamic_max_rounds):
            # Every rank samples as many rounds, so the prompt stream stays shared.
            full = bool(self.dist.min(torch.tensor(int(dynamic.add(self.collect())))))
            if full:
                break
        return dynamic.batch(), dynamic.sampled, dynamic.stats(self.dist)

    def collect(self) -> Rollout:
        """This rank's share of the iteration's prompts, sampled and scored: rollout_batch_size
        responses, generation.samples_per_prompt of each prompt in consecutive rows. The policy (and
        a shared value head) stay gathered while sampling, so each rank generates at its own pace."""
        prompts = self.cfg.algo.rollout_batch_size // self.group_size
        indices = repeat_groups(self.sampler.next_indices(prompts)[self.dist.shard(prompts)], self.group_size)
        ids, mask = left_pad([self.inputs.prompt_ids[i] for i in indices], self.inputs.tokenizer.pad_token_id)
        self.sync_engine()
        with gathered(self.sampling_modules()):
            return collect_rollout(
                self.models,
                self.scorer,
                ids.to(self.device),
                mask.to(self.device),
                self.cfg.generation,
                eos_id=self.inputs.tokenizer.eos_token_id,
                pad_id=self.inputs.tokenizer.pad_token_id,
                timer=self.timer,
                engine=self.engine,
            )

    def sampling_modules(self) -> list[torch.nn.Module]:
        modules = [self.models.policy]
        if self.models.critic.reads_policy_hidden:
            modules.append(self.models.critic.module)
        return modules

    def evaluate(self, log: RunLogger) -> dict:
        """Validation, then the things it drives: plateau LR, best model, early stopping."""
        cfg, started = self.cfg, time.perf_counter()
        prompts = self.inputs.val_prompt_ids[self.dist.shard(len(self.inputs.val_prompt_ids))]
        self.sync_engine()
        with self.autocast(), gathered(self.sampling_modules()):
            stats = validate(
                self.models,
                self.scorer,
                prompts,
                cfg.generation,
                batch_size=cfg.algo.rollout_batch_size // self.dist.world_size,
                eos_id=self.inputs.tokenizer.eos_token_id,
                pad_id=self.inputs.tokenizer.pad_token_id,
                seed=cfg.seed + 1 + self.dist.rank,
                device=self.device,
                timer=self.timer,
                reducer=self.dist,
                engine=self.engine,
            )
        self.timer.pop()  # validation phases are not training time
        release_cached_memory(self.device, cfg.trainer.empty_cache)
        reward = stats["val/reward"]
        self.lr_schedule.on_validation(reward)
        if self.early_stopping.update(reward, self.step) and cfg.eval.save_best:
            meta = {"step": self.step, "val/reward": reward}
            with writing(self.run_dir / "best"):
                save_models(self.models, self.inputs.tokenizer, self.run_dir / "best", self.dist, meta=meta)
            log.info(f"step {self.step}: val/reward {reward:+.4f} is the best so far; saved best/")
        stopping = self.early_stopping
        if stopping.should_stop:
            self.stopped_early = True
            log.info(
                f"early stop at step {self.step}: val/reward has not beaten {stopping.best:+.4f} (step {stopping.best_step}) "
                f"by more than {stopping.threshold} in {stopping.bad_evals} validations"
            )
        return {
            **stats,
            "val/best_reward": stopping.best,
            "early_stop/bad_evals": stopping.bad_evals,
            **self.slowest({"time/validate_s": time.perf_counter() - started}),
        }

    def checkpoint(self, log: RunLogger) -> None:
        with writing(self.run_dir / "checkpoints" / f"step_{self.step}"):
            self.last_checkpoint = save_training_checkpoint(
                self.run_dir / "checkpoints",
                self.step,
                self.dist,
                self.learners.named(),
                self.state_dict(),
                self.rank_state_dict(),
                self.config,
                self.cfg.checkpoint.keep,
            )
        log.info(f"step {self.step}: checkpoint {self.last_checkpoint}")

    def finish(self, log: RunLogger) -> None:
        cfg = self.cfg
        if cfg.trainer.save_final:
            with writing(self.run_dir / "final"):
                path = save_models(self.models, self.inputs.tokenizer, self.run_dir / "final", self.dist)
            log.info(f"saved {'policy and critic' if self.models.has_critic else 'policy'} to {path}")
        if cfg.logging.plots and self.history and self.dist.is_main:
            from rlhand.reporting.plots import plot_run

            title = f"{cfg.algo.name} / replay {cfg.replay.name} / seed {cfg.seed}"
            with writing(self.run_dir / "plots"):
                paths = plot_run(self.history, self.run_dir / "plots", title)
            log.info(f"plots: {', '.join(str(p) for p in paths)}")
        log.info(summary_line(self.history))

    def save_config(self) -> None:
        """training_config.json beside Hydra's .hydra/config.yaml: the resolved config as the code saw it."""
        if not self.dist.is_main:
            return
        with writing(self.run_dir / "training_config.json"):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.run_dir / "training_config.json.tmp"
            tmp.write_text(json.dumps(self.config, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.run_dir / "training_config.json")


def sampled_stats(sampled: list[Rollout], reducer: Reducer = LOCAL, with_values: bool = True) -> dict[str, float]:
    """Statistics of everything sampled this iteration (dynamic sampling: every round, dropped
    groups included, so reward/mean is the policy's, not the filter's)."""
    stats = rollout_stats(concat_rollouts(sampled, 0) if len(sampled) > 1 else sampled[0], reducer)
    if len(sampled) > 1:  # each round's own width, not the concatenation's padded one
        stats["response/generated_tokens"] = generated_tokens(sampled, reducer)
    if not with_values:
        del stats["value/mean"]
    return stats


def generated_tokens(rollouts: list[Rollout], reducer: Reducer = LOCAL) -> int:
    """Sampling steps x prompts, summed: the tokens the sampler produced (rows stop early only together)."""
    generated = torch.tensor(float(sum(rollout.response_ids.numel() for rollout in rollouts)))
    return int(reducer.sum(generated))


def rollout_stats(rollout: Rollout, reducer: Reducer = LOCAL) -> dict[str, float]:
    """The fresh rollout's statistics (over every rank's rows)."""
    lengths = rollout.response_mask.sum(dim=1).float()
    return {
        "reward/mean": mean(rollout.scores, reducer).item(),
        "reward/std": std(rollout.scores, reducer).item(),
        "reward/raw_mean": mean(rollout.raw_scores, reducer).item(),
        "response/length_mean": mean(lengths, reducer).item(),
        "response/eos_fraction": mean(rollout.ended.float(), reducer).item(),
        "response/generated_tokens": generated_tokens([rollout], reducer),
        "value/mean": masked_mean(rollout.values, rollout.response_mask, reducer=reducer).item(),
    }


def summary_line(history: list[dict], window: int = 10) -> str:
    if not history:
        return "no steps run"
    k = min(window, max(1, len(history) // 2))
    start = sum(m["reward/mean"] for m in history[:k]) / k
    end = sum(m["reward/mean"] for m in history[-k:]) / k
    seconds = sum(m["time/iteration_s"] for m in history)
    line = f"reward/mean: start {start:+.3f} -> end {end:+.3f} (mean of first/last {k} steps); {len(history)} steps in {seconds:.1f}s"
    best = [m["val/reward"] for m in history if "val/reward" in m]
    if best:
        line += f"; best val/reward {max(best):+.3f}"
    return line
