"""A run of one stage, whatever the stage: the run folder and config record, logging sinks, the
iteration loop with validation, early stopping and the best model, checkpoints (cadence, exact
resume), the final save. The stage supplies its inputs, state, step and metrics (rlhand/run/stage.py).

With several ranks (torchrun) every rank runs this same loop; every statistic a stage reports is
already reduced over ranks, times and memory peaks are the slowest rank's, and rank 0 alone writes
logs, metrics, plots and models.
"""

import json
import os
import time
import traceback
from pathlib import Path

import torch

from rlhand.checkpoint.resume import config_differences
from rlhand.checkpoint.rng import capture_rng, restore_rng
from rlhand.checkpoint.store import checkpoint_step
from rlhand.checkpoint.training import load_learners, read_config, read_rank_state, read_training_state, save_training_checkpoint
from rlhand.config.figures import split_watched, watched_figure
from rlhand.config.load import config_dict
from rlhand.config.schema import RESUME_AUTO, Quantization, TrainConfig
from rlhand.distributed import context
from rlhand.distributed.layout import check_quantized_layout, resolve_layout
from rlhand.errors import writing
from rlhand.evaluation.early_stopping import EarlyStopping, watched_value
from rlhand.models.quantize import check_quantization_library
from rlhand.reporting.memory import memory_stats, release_cached_memory, reset_peak_memory
from rlhand.reporting.run_logger import RunLogger, SilentLogger
from rlhand.reporting.timer import PhaseTimer
from rlhand.run.environment import autocast_context, resolve_device, seed_everything
from rlhand.run.lock import RunFolderLock
from rlhand.run.restore import find_start
from rlhand.run.saving import adopt_best
from rlhand.run.schedules import LRSchedule
from rlhand.run.stage import RunEnv


class Run:
    def __init__(self, cfg: TrainConfig, run_dir: Path, stage_class):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.dist = ctx = context.current()
        self.config = {**config_dict(cfg), "world_size": ctx.world_size}
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        device = resolve_device(cfg.trainer.device, ctx)
        autocast = autocast_context(cfg, device)
        inputs = stage_class.prepare(cfg, ctx, device)  # everything that can be wrong, before any model loads
        self.lock = RunFolderLock(self.run_dir) if ctx.is_main else None  # released when fit ends, or at exit
        self.notes_info: list[str] = []  # said as the run begins (how a resumed run's config was made)
        self.resume_from, self.notes = find_start(cfg.resume, self.run_dir, self.config, ctx, stage_class.rank_local_state(cfg), self.lock)
        layout = resolve_layout(cfg.trainer, ctx.world_size, ctx.local_world_size, quantized=cfg.model.quantization is not Quantization.none)
        check_quantized_layout(cfg.model, layout)
        check_quantization_library(cfg.model)
        self.env = RunEnv(ctx, device, layout, autocast, PhaseTimer(device))
        self.fit_line = stage_class.check_memory(cfg, inputs, self.env)  # printed before any model loads
        seed_everything(cfg.seed)
        self.stage = stage_class(cfg, inputs, self.env)
        self.lr_schedule = LRSchedule(cfg.scheduler, self.stage.learners.optimizers(), cfg.trainer.max_steps)
        self.early_stopping = EarlyStopping(cfg.early_stop.patience, cfg.early_stop.threshold)
        self.watched = watched_figure(cfg)
        self.step, self.stopped_early = 0, False
        self.last_checkpoint: Path | None = None  # the newest checkpoint of this trajectory, for error messages
        self.history: list[dict] = []
        if self.resume_from is not None:
            self.last_checkpoint = self.resume_from
            self.resume(self.resume_from)
        self.stage.start()  # last, so that a fault before it leaves no engine behind

    @property
    def device(self) -> torch.device:
        return self.env.device

    def fit(self) -> list[dict]:
        cfg = self.cfg
        # metrics.jsonl and TensorBoard are rewritten up to this step (0 on a fresh start): a resume drops
        # the rows an interrupted run wrote after its checkpoint, a fresh restart (resume=auto, no
        # checkpoint yet) the rows of the attempt that crashed.
        log = RunLogger(cfg, self.run_dir, self.config, self.history, self.step) if self.dist.is_main else SilentLogger()
        try:
            self.begin(log)
            while self.step < cfg.trainer.max_steps and not self.stopped_early:
                self.step += 1
                metrics = self.iteration(log)
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
            try:
                self.stage.close()
                log.close()
            finally:
                if self.lock is not None:
                    self.lock.release()
        return self.history

    def begin(self, log) -> None:
        self.save_config()
        log.info(f"{self.stage.describe()}, {self.cfg.trainer.max_steps} steps, device {self.device}{self._ranks()}, run dir {self.run_dir}")
        log.text_only(self.fit_line)
        for line in self.notes_info:
            log.info(line)
        for note in self.notes:
            log.warning(note)
        if self.resume_from is not None:
            log.info(f"resumed from {self.resume_from} at step {self.step}")
            if self.step >= self.cfg.trainer.max_steps or self.stopped_early:
                why = "stopped early" if self.stopped_early else f"reached trainer.max_steps={self.cfg.trainer.max_steps}"
                log.info(f"the run is finished ({why} at step {self.step}); to train on, extend it: trainer.max_steps=<more> resume=auto")
        elif self.cfg.resume == RESUME_AUTO:
            log.info(f"resume=auto: no checkpoint in {self.run_dir}, starting fresh (a run's folder is chosen with hydra.run.dir)")
        if self.cfg.eval.before_training and self.step == 0:
            self.validate_before_training(log)
        release_cached_memory(self.device, self.cfg.trainer.empty_cache)  # what loading the models left behind
        reset_peak_memory(self.device)

    def _ranks(self) -> str:
        layout = self.env.layout
        return f", {layout.ranks} ranks ({layout.strategy.value})" if layout.ranks > 1 else ""

    def iteration(self, log) -> dict:
        cfg, lr = self.cfg, self.lr_schedule.lr
        metrics = {"step": self.step, **self.stage.step(self.step), "lr": lr}
        if cfg.eval.samples_every and self.step % cfg.eval.samples_every == 0:
            log.samples(self.step, self.stage.samples())  # the training rollout's, before validation's replace them
        self.lr_schedule.step()
        if cfg.eval.every and (self.step % cfg.eval.every == 0 or self.step == cfg.trainer.max_steps):
            metrics.update(self.evaluate(log))
        metrics.update(self.dist.slowest(memory_stats(self.device)))  # peaks of this iteration, validation included
        return metrics

    def validate_before_training(self, log) -> None:
        """The starting model's validation figures (verl's val_before_train): in the log and in
        logs/val_before_training.json, not in the step history (a resumed run does not repeat it)."""
        stats = self.stage.validate(0)
        log.samples(0, self.stage.samples())
        log.info("before training: " + ", ".join(f"{k} {v:+.4f}" for k, v in stats.items()))
        if self.dist.is_main:
            with writing(self.run_dir / "logs" / "val_before_training.json"):
                (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
                (self.run_dir / "logs" / "val_before_training.json").write_text(json.dumps(stats, indent=1), encoding="utf-8")

    def evaluate(self, log) -> dict:
        """Validation, then the things it drives: plateau LR, best model, early stopping."""
        started = time.perf_counter()
        stats = self.stage.validate(self.step)
        log.samples(self.step, self.stage.samples())
        # early_stop.metric or the stage's figure, higher is better ("-val/loss": a loss, shown as itself).
        value, (sign, name) = watched_value(stats, self.watched), split_watched(self.watched)
        self.lr_schedule.on_validation(value)
        if self.early_stopping.update(value, self.step) and self.cfg.eval.save_best:
            with writing(self.run_dir / "best"):
                self.stage.save(self.run_dir / "best", meta={"step": self.step, name: sign * value})
            log.info(f"step {self.step}: {name} {sign * value:+.4f} is the best so far; saved best/")
        stopping = self.early_stopping
        if stopping.should_stop:
            self.stopped_early = True
            log.info(
                f"early stop at step {self.step}: {name} has not beaten {sign * stopping.best:+.4f} (step {stopping.best_step}) "
                f"by more than {stopping.threshold} in {stopping.bad_evals} validations"
            )
        return {
            **stats,
            f"val/best_{name.removeprefix('val/').replace('/', '_')}": sign * stopping.best,  # val/hard/reward -> val/best_hard_reward
            "early_stop/bad_evals": stopping.bad_evals,
            **self.dist.slowest({"time/validate_s": time.perf_counter() - started}),
        }

    def checkpoint(self, log) -> None:
        with writing(self.run_dir / "checkpoints" / f"step_{self.step}"):
            self.last_checkpoint = save_training_checkpoint(
                self.run_dir / "checkpoints",
                self.step,
                self.dist,
                self.stage.learners.named(),
                self.state_dict(),
                {"rng": capture_rng(), "replay": self.stage.rank_state_dict()},
                self.config,
                self.cfg.checkpoint.keep,
            )
        log.info(f"step {self.step}: checkpoint {self.last_checkpoint}")

    def finish(self, log) -> None:
        cfg = self.cfg
        if cfg.trainer.save_final:
            with writing(self.run_dir / "final"):
                saved = self.stage.save(self.run_dir / "final")
            log.info(f"saved {saved} to {self.run_dir / 'final'}")
        if cfg.logging.plots and self.history and self.dist.is_main:
            from rlhand.reporting.plots import plot_run

            title = self.stage.plot_title()
            with writing(self.run_dir / "plots"):
                paths = plot_run(self.history, self.run_dir / "plots", title)
            log.info(f"plots: {', '.join(str(p) for p in paths)}")
        log.info(self.stage.summary(self.history))

    def save_config(self) -> None:
        """training_config.json beside Hydra's .hydra/config.yaml: the resolved config as the code saw it."""
        if not self.dist.is_main:
            return
        with writing(self.run_dir / "training_config.json"):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.run_dir / "training_config.json.tmp"
            tmp.write_text(json.dumps(self.config, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.run_dir / "training_config.json")

    def state_dict(self) -> dict:
        """The run's global state besides the learners' (model and optimizer, checkpointed apart
        and sharded): the same on every rank. Each stateful part gives its own state."""
        return {
            "step": self.step,
            "stopped_early": self.stopped_early,
            "history": self.history,
            "lr_schedule": self.lr_schedule.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            **self.stage.state_dict(),
        }

    def resume(self, folder: Path) -> None:
        state = read_training_state(folder)
        load_learners(folder, self.stage.learners.named())
        written_by, world = state["world_size"], self.dist.world_size
        if written_by != world:
            self.notes.append(
                f"{folder} was written by {written_by} processes and resumes on {world}: "
                "the weights, optimizer and schedule continue exactly, the random streams do not"
            )
        rank_state = read_rank_state(folder, self.dist.rank if written_by == world else 0)
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.history = list(state["history"])
        self.stage.load_state_dict(state)
        self.stage.load_rank_state_dict(rank_state["replay"])
        self.step, self.stopped_early = state["step"], state["stopped_early"]
        if written_by == world:
            restore_rng(rank_state["rng"])  # last: building the run drew from the same generators
        self.notes.extend(f"config differs from the checkpoint's: {line}" for line in config_differences(read_config(folder), self.config))
        self.adopt_best_model()

    def adopt_best_model(self) -> None:
        """Resuming another run's checkpoint into this folder: bring its best/ along when it matches."""
        source_run = self.resume_from.parent.parent  # <run>/checkpoints/step_N
        best_step = self.early_stopping.best_step
        if source_run.resolve() == self.run_dir.resolve() or not best_step or not self.dist.is_main:
            return
        if not adopt_best(source_run, self.run_dir, best_step):
            self.notes.append(f"best model (step {best_step}) not found in {source_run}/best; best/ starts with the next improvement")
