"""Tiny models and batches for tests: built from a config, nothing downloaded."""

import torch

from rlhand.config.schema import CriticBackbone, ModelConfig
from rlhand.data.sampler import left_pad
from rlhand.data.tokenizer import build_char_tokenizer
from rlhand.models.build import build_models
from rlhand.models.plan import CriticKind, ModelPlan, ReferenceKind


def plan_for(cfg: ModelConfig, need_ref=True, need_reward_model=False) -> ModelPlan:
    """What rlhand/models/plan.py decides from a whole run config, for a model config alone."""
    critic = CriticKind(cfg.critic_backbone.value)
    reference = ReferenceKind.none if not need_ref else ReferenceKind.base if cfg.lora.enabled else ReferenceKind.copy
    lora_critic = cfg.lora.enabled and cfg.lora.critic.value == "lora" and critic is CriticKind.separate
    return ModelPlan(critic=critic, lora_critic=lora_critic, reference=reference, reward_model=need_reward_model)


def tiny_models(need_ref=True, need_reward_model=False, seed=0, critic_backbone="separate", **model_fields):
    torch.manual_seed(seed)
    tokenizer = build_char_tokenizer()
    shape = {"n_layer": 2, "n_embd": 32, "n_head": 4, "n_positions": 64, **model_fields}
    cfg = ModelConfig(name="tiny", critic_backbone=CriticBackbone(critic_backbone), **shape)
    models = build_models(cfg, tokenizer, plan_for(cfg, need_ref, need_reward_model), torch.device("cpu"))
    return models, tokenizer


def prompt_batch(tokenizer, texts=("abc=", "hello world=", "xy=")):
    return left_pad([tokenizer(t)["input_ids"] for t in texts], tokenizer.pad_token_id)


def make_update(models, algo, optimizer=lambda params: torch.optim.SGD(params, lr=0.0), threads=None):
    """A PPOUpdate over `models` with one optimizer per model (default: lr-0 SGD, so a step changes
    nothing and the accumulated .grad stays readable)."""
    from rlhand.reporting.timer import PhaseTimer
    from rlhand.run.learners import Learner, Learners
    from rlhand.stages.ppo.update import PPOUpdate

    learners = Learners.of(
        policy=Learner(models.policy, optimizer(models.policy.parameters()), algo.max_grad_norm),
        critic=Learner(models.critic.module, optimizer(models.critic.module.parameters()), algo.max_grad_norm),
    )
    return PPOUpdate(learners, models.critic, algo, timer=PhaseTimer(torch.device("cpu")), threads=threads)
