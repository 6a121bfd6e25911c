"""A run's models as one set: policy, critic, frozen reference and (optional) reward model, built
as the plan says (rlhand/models/plan.py), from a tiny config or from_pretrained (loaders.py)."""

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhand.config.schema import ModelConfig, ModelSource, Quantization
from rlhand.models import unpadded
from rlhand.models.critic import Critic, SeparateCritic, SharedHeadCritic
from rlhand.models.forward import ForwardLimits
from rlhand.models.loaders import load_classifier, load_hf, load_tiny
from rlhand.models.lora import add_lora
from rlhand.models.plan import CriticKind, ModelPlan, ReferenceKind
from rlhand.models.quantize import quantize
from rlhand.models.weights import DTYPES, cast_by_role, enable_activation_checkpointing, frozen_dtype, prepare


@dataclass
class Models:
    policy: PreTrainedModel  # with LoRA: a PEFT model around it
    critic: Critic  # a model of its own, a head on the policy, or none (rlhand/models/critic.py)
    ref: Optional[PreTrainedModel]  # a frozen copy of the policy; None when no KL term needs one or with LoRA
    reward_model: Optional[PreTrainedModel]  # None when a reward function scores
    # LoRA: the reference is the policy's base, its adapters switched off (no second copy).
    reference_is_base: bool = False
    # How large the pieces of their forwards may be (logit chunks, scoring micro-batches).
    limits: ForwardLimits = field(default_factory=ForwardLimits)

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.policy, self.critic.module, self.ref, self.reward_model) if m is not None]

    @property
    def has_critic(self) -> bool:
        return self.critic.trained

    @property
    def has_reference(self) -> bool:
        return self.ref is not None or self.reference_is_base

    @contextmanager
    def reference(self):
        """The model whose log-probs are the reference's, for the block's forwards."""
        if self.ref is not None:
            yield self.ref
        else:
            with self.policy.disable_adapter():
                yield self.policy


def build_models(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, plan: ModelPlan, device: torch.device) -> Models:
    """The models `plan` names, prepared: dropout off, padding-free, checkpointed, LoRA-wrapped."""
    load = load_tiny if cfg.source is ModelSource.tiny else load_hf
    policy, critic, ref, reward_model = load(cfg, tokenizer, plan)
    models = Models(policy=policy, critic=critic, ref=ref, reward_model=reward_model)
    frozen_type = frozen_dtype(cfg)
    for frozen in (models.ref, models.reward_model):
        if frozen is not None:
            frozen.to(frozen_type).requires_grad_(False)
    _quantize(models, cfg, plan, frozen_type)  # before prepare(): moving to the device quantizes
    for model in models.modules():
        prepare(model, device)
    if cfg.remove_padding:
        for model in models.modules():
            if isinstance(model, PreTrainedModel):  # a shared value head reads the policy's forward
                unpadded.enable(model)
    trained = [models.policy] + ([models.critic.module] if isinstance(models.critic, SeparateCritic) else [])
    if cfg.gradient_checkpointing:
        for model in trained:
            enable_activation_checkpointing(model)
    if cfg.lora.enabled:
        _add_lora(models, cfg, plan, frozen_type)
    return models


def _quantize(models: Models, cfg: ModelConfig, plan: ModelPlan, compute: torch.dtype) -> None:
    """model.quantization: the LoRA bases of the policy and a critic of its own (the reference is the
    policy's quantized base, adapters off); model.frozen_quantization: a reference copy, the reward model."""
    if cfg.quantization is not Quantization.none:
        quantize(models.policy, cfg.quantization.value, compute, "model.quantization")
        if plan.lora_critic and isinstance(models.critic, SeparateCritic):
            quantize(models.critic.module, cfg.quantization.value, compute, "model.quantization")
    if cfg.frozen_quantization is not Quantization.none:
        for frozen in (models.ref, models.reward_model):
            if frozen is not None:
                quantize(frozen, cfg.frozen_quantization.value, compute, "model.frozen_quantization")


def _add_lora(models: Models, cfg: ModelConfig, plan: ModelPlan, frozen_type: torch.dtype) -> None:
    models.policy = add_lora(models.policy, cfg.lora, "CAUSAL_LM")
    if isinstance(models.critic, SharedHeadCritic):
        models.critic.module.rebind(models.policy)
    elif plan.lora_critic:
        models.critic = SeparateCritic(add_lora(models.critic.module, cfg.lora, "SEQ_CLS"))
    models.reference_is_base = plan.reference is ReferenceKind.base
    # Under LoRA the trained models' bases are frozen too: they take frozen_dtype, the adapters
    # (and a trained head) model.dtype. The reference (the base, adapters off) follows.
    for model in (models.policy, models.critic.module if isinstance(models.critic, SeparateCritic) else None):
        if model is not None:
            cast_by_role(model, trained=DTYPES[cfg.dtype.value], frozen=frozen_type)


def build_policy_only(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device) -> PreTrainedModel:
    """The policy alone, prepared as a run's policy is (stage=sft trains it)."""
    plan = ModelPlan(critic=CriticKind.none, lora_critic=False, reference=ReferenceKind.none, reward_model=False)
    return build_models(cfg, tokenizer, plan, device).policy


def build_reward_model_to_train(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device) -> PreTrainedModel:
    """A *ForSequenceClassification model with one label from model.policy's weights (a fresh score
    head), prepared like a trained model: dropout off, padding-free, checkpointed, LoRA (the head
    trains whole). stage=reward_model trains it; reward=model loads what it saves."""
    model = load_classifier(cfg, tokenizer, frozen_dtype(cfg) if cfg.lora.enabled else DTYPES[cfg.dtype.value])
    if model.get_input_embeddings().num_embeddings < len(tokenizer):  # a pad token of its own was added (data/tokenizer.distinct_pad)
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id  # what transformers' classifiers read a padded batch by
    if cfg.quantization is not Quantization.none:
        quantize(model, cfg.quantization.value, frozen_dtype(cfg), "model.quantization")
    prepare(model, device)
    if cfg.remove_padding:
        unpadded.enable(model)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    if cfg.lora.enabled:
        model = add_lora(model, cfg.lora, "SEQ_CLS")
        cast_by_role(model, trained=DTYPES[cfg.dtype.value], frozen=frozen_dtype(cfg))
    return model
