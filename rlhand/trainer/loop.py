"""The PPO iteration: prompts -> rollout -> rewards and advantages -> update -> log."""

import time
from pathlib import Path

import torch

from rlhand.config.schema import TrainConfig
from rlhand.core.masked import masked_mean
from rlhand.data.sampler import PromptSampler, left_pad
from rlhand.reporting.console import ConsoleReporter
from rlhand.reporting.metrics_file import MetricsFile
from rlhand.reporting.timer import PhaseTimer
from rlhand.rollout.collect import Rollout, collect_rollout
from rlhand.trainer import setup
from rlhand.trainer.advantages import assign_advantages
from rlhand.trainer.save import save_final
from rlhand.trainer.update import ppo_update


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        self.device = setup.resolve_device(cfg.trainer.device)
        self.inputs = setup.prepare_inputs(cfg)  # fails on bad input before any model is built
        setup.seed_everything(cfg.seed)
        self.models, self.scorer = setup.prepare_models(cfg, self.inputs, self.device)
        self.optimizers = setup.build_optimizers(cfg, self.models)
        self.schedulers = setup.build_schedulers(cfg, self.optimizers)
        self.kl_ctl = setup.build_kl_controller(cfg)
        self.sampler = PromptSampler(len(self.inputs.prompt_ids), cfg.seed)
        self.timer = PhaseTimer(self.device)
        self.step = 0
        self.totals = {"samples/generated": 0, "samples/trained": 0}

    def fit(self) -> list[dict]:
        cfg = self.cfg
        metrics_file = MetricsFile(self.run_dir / "metrics.jsonl")
        console = ConsoleReporter(cfg.trainer.max_steps, cfg.logging.progress_bar, cfg.logging.console_every)
        console.print(f"rlhand: {cfg.algo.name} on {cfg.task.name}, {cfg.trainer.max_steps} steps, device {self.device}, run dir {self.run_dir}")
        history = []
        try:
            while self.step < cfg.trainer.max_steps:
                self.step += 1
                metrics = self.train_step()
                history.append(metrics)
                metrics_file.write(metrics)
                console.step(metrics)
        finally:
            console.close()
            metrics_file.close()
        if cfg.trainer.save_final:
            path = save_final(self.models, self.inputs.tokenizer, self.run_dir / "final")
            console.print(f"saved policy and critic to {path}")
        console.print(summary_line(history))
        return history

    def train_step(self) -> dict:
        cfg, started = self.cfg, time.perf_counter()
        rollout = self.collect()
        rollout_s = time.perf_counter() - started
        kl_coef = self.kl_ctl.value
        with self.timer("advantages"):
            kl_stats = assign_advantages(rollout, cfg.algo, kl_coef)
        update_started = time.perf_counter()
        update_stats = ppo_update(
            self.models, self.optimizers, rollout, cfg.algo, kl_coef=kl_coef, temperature=cfg.generation.temperature, timer=self.timer
        )
        update_s = time.perf_counter() - update_started
        self.kl_ctl.update(kl_stats["kl/ref"], len(rollout))
        lr = self.schedulers[0].get_last_lr()[0]
        for scheduler in self.schedulers:
            scheduler.step()
        self.totals["samples/generated"] += len(rollout)
        # Counted from the steps taken: target_kl can end an iteration before all its epochs.
        self.totals["samples/trained"] += int(update_stats["policy/optimizer_steps"]) * cfg.algo.minibatch_size
        metrics = {
            "step": self.step,
            **rollout_stats(rollout),
            **kl_stats,
            **update_stats,
            "kl/coef": kl_coef,
            "lr": lr,
            **self.totals,
            "time/rollout_s": rollout_s,
            "time/update_s": update_s,
            **{f"time/{phase}_s": seconds for phase, seconds in self.timer.pop().items()},
            "time/iteration_s": time.perf_counter() - started,
        }
        return metrics

    def collect(self) -> Rollout:
        indices = self.sampler.next_indices(self.cfg.algo.rollout_batch_size)
        ids, mask = left_pad([self.inputs.prompt_ids[i] for i in indices], self.inputs.tokenizer.pad_token_id)
        return collect_rollout(
            self.models,
            self.scorer,
            ids.to(self.device),
            mask.to(self.device),
            self.cfg.generation,
            eos_id=self.inputs.tokenizer.eos_token_id,
            pad_id=self.inputs.tokenizer.pad_token_id,
            timer=self.timer,
        )


def rollout_stats(rollout: Rollout) -> dict[str, float]:
    lengths = rollout.response_mask.sum(dim=1).float()
    return {
        "reward/mean": rollout.scores.mean().item(),
        "reward/std": rollout.scores.std().item() if len(rollout) > 1 else 0.0,
        "reward/raw_mean": rollout.raw_scores.mean().item(),
        "response/length_mean": lengths.mean().item(),
        "response/eos_fraction": rollout.ended.float().mean().item(),
        "value/mean": masked_mean(rollout.values, rollout.response_mask).item(),
    }


def summary_line(history: list[dict], window: int = 10) -> str:
    if not history:
        return "no steps run"
    k = min(window, max(1, len(history) // 2))
    start = sum(m["reward/mean"] for m in history[:k]) / k
    end = sum(m["reward/mean"] for m in history[-k:]) / k
    seconds = sum(m["time/iteration_s"] for m in history)
    return f"reward/mean: start {start:+.3f} -> end {end:+.3f} (mean of first/last {k} steps); {len(history)} steps in {seconds:.1f}s"
