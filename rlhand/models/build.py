"""Policy, frozen reference, critic and (optional) reward model, from a tiny config or from_pretrained."""

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhand.config.schema import CriticBackbone, CriticInit, ModelConfig, ModelSource
from rlhand.errors import ModelLoadError
from rlhand.models import unpadded
from rlhand.models.critic import Critic, SeparateCritic, SharedHeadCritic
from rlhand.models.sources import loading
from rlhand.models.value_head import SharedValueHead

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Models:
    policy: PreTrainedModel
    critic: Critic  # a model of its own, or a head on the policy (rlhand/models/critic.py)
    ref: Optional[PreTrainedModel]  # None when no KL term needs it
    reward_model: Optional[PreTrainedModel]  # None when a reward function scores

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.policy, self.critic.module, self.ref, self.reward_model) if m is not None]


def build_models(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, *, need_ref: bool, need_reward_model: bool, device: torch.device) -> Models:
    build = _build_tiny if cfg.source is ModelSource.tiny else _build_hf
    models = build(cfg, tokenizer, need_ref, need_reward_model)
    for model in models.modules():
        prepare(model, device)
    for frozen in (models.ref, models.reward_model):
        if frozen is not None:
            frozen.requires_grad_(False)
    if cfg.remove_padding:
        for model in models.modules():
            if isinstance(model, PreTrainedModel):  # a shared value head reads the policy's forward
                unpadded.enable(model)
    return models


def prepare(model: nn.Module, device: torch.device) -> None:
    """Dropout off for good: eval mode (gradients still flow) and p=0, so log-probs of a sample
    are the same at rollout and at update and the first PPO ratio is exactly 1."""
    model.to(device)
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    if getattr(getattr(model, "config", None), "use_cache", None) is not None:
        model.config.use_cache = False  # the sampler asks for a cache explicitly


def _tiny_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, **extra) -> GPT2Config:
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # GPT-2's tanh-approximated GELU, as torch's fused kernel ("gelu_new" computes the same
        # function in several separate ops: about 15% slower forward on CPU).
        activation_function="gelu_pytorch_tanh",
        **({"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}),
        **extra,
    )


def _build_tiny(cfg: ModelConfig, tokenizer, need_ref: bool, need_reward_model: bool) -> Models:
    dtype = DTYPES[cfg.dtype.value]
    policy = GPT2LMHeadModel(_tiny_config(cfg, tokenizer)).to(dtype)
    if cfg.critic_backbone is CriticBackbone.shared:
        critic = SharedHeadCritic(SharedValueHead(policy, cfg.n_embd, dtype))
    else:
        model = GPT2ForSequenceClassification(_tiny_config(cfg, tokenizer, num_labels=1)).to(dtype)
        # Critic starts from the policy backbone, with a fresh scalar head.
        model.transformer.load_state_dict(policy.transformer.state_dict())
        critic = SeparateCritic(model)
    reward_model = None
    if need_reward_model:  # random weights: only useful for benchmarks with reward=model
        reward_model = GPT2ForSequenceClassification(_tiny_config(cfg, tokenizer, num_labels=1)).to(dtype)
    ref = copy.deepcopy(policy) if need_ref else None
    return Models(policy=policy, critic=critic, ref=ref, reward_model=reward_model)


def _build_hf(cfg: ModelConfig, tokenizer, need_ref: bool, need_reward_model: bool) -> Models:
    kwargs = {"dtype": DTYPES[cfg.dtype.value], "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    with loading("model.policy", cfg.policy):
        policy = AutoModelForCausalLM.from_pretrained(cfg.policy, **kwargs)
    reward_model = load_reward_model(cfg.reward_model, **kwargs) if need_reward_model else None
    ref = copy.deepcopy(policy) if need_ref else None
    if cfg.critic_backbone is CriticBackbone.shared:
        critic = SharedHeadCritic(SharedValueHead(policy, policy.config.hidden_size, DTYPES[cfg.dtype.value]))
        return Models(policy=policy, critic=critic, ref=ref, reward_model=reward_model)
    if cfg.critic is not None:
        field, critic_path = "model.critic", cfg.critic
    elif cfg.critic_init is CriticInit.reward_model:
        field, critic_path = "model.reward_model", cfg.reward_model
    else:
        field, critic_path = "model.policy", cfg.policy
    with loading(field, critic_path):
        model = AutoModelForSequenceClassification.from_pretrained(critic_path, num_labels=1, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return Models(policy=policy, critic=SeparateCritic(model), ref=ref, reward_model=reward_model)


def load_reward_model(path: str, **kwargs) -> PreTrainedModel:
    with loading("model.reward_model", path):
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    if model.config.num_labels != 1:
        raise ModelLoadError(f"model.reward_model: {path} has num_labels={model.config.num_labels}, a reward model needs 1")
    return model
