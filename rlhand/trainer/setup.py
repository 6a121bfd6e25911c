"""Build a run from a TrainConfig: inputs that can be wrong are checked before any model loads."""

import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, get_constant_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup

from rlhand.config.schema import Device, KLControl, ModelSource, RewardKind, SchedulerKind, TrainConfig
from rlhand.core.kl import AdaptiveKLController, FixedKLController
from rlhand.data.prompts import load_prompt_texts, truncate_prompt
from rlhand.data.tokenizer import build_char_tokenizer, load_tokenizer
from rlhand.models.build import Models, build_models
from rlhand.rewards import FunctionScorer, ModelScorer, resolve_reward_function
from rlhand.trainer.update import Optimizers


@dataclass
class RunInputs:
    """Everything read from the config and disk that is cheap to check: no model yet."""

    tokenizer: PreTrainedTokenizerBase
    prompt_ids: list[list[int]]
    reward_fn: Callable | None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: Device) -> torch.device:
    if device is Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device is Device.cuda and not torch.cuda.is_available():
        raise ValueError("trainer.device: cuda was asked for but torch sees no CUDA device")
    return torch.device(device.value)


def prepare_inputs(cfg: TrainConfig) -> RunInputs:
    if cfg.model.source is ModelSource.tiny:
        tokenizer = build_char_tokenizer()
    else:
        tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.policy, cfg.model.trust_remote_code)
    reward_fn = resolve_reward_function(cfg.reward.function) if cfg.reward.kind is RewardKind.function else None
    texts = load_prompt_texts(cfg.task, cfg.seed)
    where = cfg.task.path or f"task {cfg.task.name}"
    prompt_ids = [
        truncate_prompt(tokenizer(text)["input_ids"], cfg.task.max_prompt_tokens, cfg.task.truncation, f"{where}: prompt {i}")
        for i, text in enumerate(texts)
    ]
    return RunInputs(tokenizer=tokenizer, prompt_ids=prompt_ids, reward_fn=reward_fn)


def prepare_models(cfg: TrainConfig, inputs: RunInputs, device: torch.device) -> tuple[Models, Callable]:
    need_ref = cfg.algo.kl_coef > 0 or cfg.algo.kl_control is KLControl.adaptive
    need_rm = cfg.reward.kind is RewardKind.model
    models = build_models(cfg.model, inputs.tokenizer, need_ref=need_ref, need_reward_model=need_rm, device=device)
    scorer = ModelScorer(models.reward_model) if need_rm else FunctionScorer(inputs.reward_fn, inputs.tokenizer)
    return models, scorer


def build_optimizers(cfg: TrainConfig, models: Models) -> Optimizers:
    algo = cfg.algo

    def adam(model, lr):
        return torch.optim.AdamW(model.parameters(), lr=lr, eps=algo.adam_eps, weight_decay=algo.weight_decay)

    return Optimizers(policy=adam(models.policy, algo.lr), critic=adam(models.critic, algo.critic_lr or algo.lr))


def build_schedulers(cfg: TrainConfig, optimizers: Optimizers) -> list:
    """One LR scheduler per optimizer, stepped once per PPO iteration."""
    sched = cfg.scheduler
    out = []
    for optimizer in (optimizers.policy, optimizers.critic):
        if sched.kind is SchedulerKind.constant:
            out.append(get_constant_schedule_with_warmup(optimizer, sched.warmup_steps))
        else:
            out.append(
                get_cosine_with_min_lr_schedule_with_warmup(
                    optimizer, sched.warmup_steps, cfg.trainer.max_steps, min_lr_rate=sched.min_lr_ratio
                )
            )
    return out


def build_kl_controller(cfg: TrainConfig) -> FixedKLController:
    algo = cfg.algo
    if algo.kl_control is KLControl.adaptive:
        return AdaptiveKLController(algo.kl_coef, algo.kl_target, algo.kl_horizon)
    return FixedKLController(algo.kl_coef)
