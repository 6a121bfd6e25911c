"""Which models a run builds, decided once from the config: the trainer builds them, the memory
estimate sizes them, and every "is there a critic?" reads the answer."""

from dataclasses import dataclass
from enum import Enum

from rlhand.config.schema import CriticBackbone, LoraCritic, RewardKind, TrainConfig
from rlhand.core.estimators import ESTIMATORS


class CriticKind(str, Enum):
    none = "none"  # a critic-free estimator (grpo, rloo, ...): no value model at all
    separate = "separate"  # a *ForSequenceClassification model of its own
    shared = "shared"  # a scalar head on the policy's final hidden state


class ReferenceKind(str, Enum):
    none = "none"  # no KL term
    copy = "copy"  # a frozen copy of the policy
    base = "base"  # LoRA: the policy's base with its adapters off


@dataclass(frozen=True)
class ModelPlan:
    critic: CriticKind
    lora_critic: bool  # a separate critic trained through adapters of its own
    reference: ReferenceKind
    reward_model: bool


def model_plan(cfg: TrainConfig) -> ModelPlan:
    m, algo = cfg.model, cfg.algo
    if not ESTIMATORS[algo.estimator].needs_critic:
        critic = CriticKind.none
    else:
        critic = CriticKind.shared if m.critic_backbone is CriticBackbone.shared else CriticKind.separate
    reference = ReferenceKind.none if not algo.needs_reference else ReferenceKind.base if m.lora.enabled else ReferenceKind.copy
    return ModelPlan(
        critic=critic,
        lora_critic=m.lora.enabled and m.lora.critic is LoraCritic.lora and critic is CriticKind.separate,
        reference=reference,
        reward_model=cfg.reward.kind is RewardKind.model,
    )
