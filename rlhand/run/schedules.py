"""Learning-rate schedules for both optimizers, built from torch / transformers schedulers.

The LR changes once per PPO iteration (not per minibatch), so `warmup_steps` and the cosine length
are counted in iterations. `plateau` is driven by the validation reward, not by a loss: a PPO loss
is not a measure of progress (it is re-centred on every fresh batch).
"""

import torch
from transformers import get_constant_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup

from rlhand.config.schema import SchedulerConfig, SchedulerKind


class LRSchedule:
    def __init__(self, cfg: SchedulerConfig, optimizers: list[torch.optim.Optimizer], max_steps: int):
        self.kind, self.warmup_steps = cfg.kind, cfg.warmup_steps
        self.optimizers = optimizers
        self.iterations = 0
        if cfg.kind is SchedulerKind.cosine:
            self.per_step = [
                get_cosine_with_min_lr_schedule_with_warmup(opt, cfg.warmup_steps, max_steps, min_lr_rate=cfg.min_lr_ratio)
                for opt in optimizers
            ]
        else:
            # constant, and plateau's warmup: after warmup this LambdaLR stays at 1 and is no longer stepped.
            self.per_step = [get_constant_schedule_with_warmup(opt, cfg.warmup_steps) for opt in optimizers]
        self.plateau = []
        if cfg.kind is SchedulerKind.plateau:
            self.plateau = [
                torch.optim.lr_scheduler.ReduceLROnPlateau(
                    opt,
                    mode="max",
                    factor=cfg.factor,
                    patience=cfg.patience,
                    threshold=cfg.threshold,
                    threshold_mode="abs",
                    min_lr=[group["initial_lr"] * cfg.min_lr_ratio for group in opt.param_groups],
                )
                for opt in optimizers
            ]

    @property
    def lr(self) -> float:
        """The policy LR that the next optimizer step will use."""
        return self.optimizers[0].param_groups[0]["lr"]

    def step(self) -> None:
        """After each PPO iteration."""
        self.iterations += 1
        if self.kind is SchedulerKind.plateau and self.iterations > self.warmup_steps:
            return  # the plateau scheduler owns the LR now
        for scheduler in self.per_step:
            scheduler.step()

    def on_validation(self, val_reward: float) -> None:
        # Validations during warmup are ignored: the LR is still ramping up on its own.
        if self.plateau and self.iterations >= self.warmup_steps:
            for scheduler in self.plateau:
                scheduler.step(val_reward)

    def state_dict(self) -> dict:
        return {
            "iterations": self.iterations,
            "per_step": [s.state_dict() for s in self.per_step],
            "plateau": [s.state_dict() for s in self.plateau],
        }

    def load_state_dict(self, state: dict) -> None:
        self.iterations = state["iterations"]
        for scheduler, saved in zip(self.per_step, state["per_step"], strict=True):
            scheduler.load_state_dict(saved)
        for scheduler, saved in zip(self.plateau, state["plateau"], strict=True):
            scheduler.load_state_dict(saved)
