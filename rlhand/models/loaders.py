"""Where a run's models come from: the built-in tiny GPT-2 built from a config, or model=hf folders
and hub ids through from_pretrained. What is loaded is what the plan names (rlhand/models/plan.py)."""

import copy

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhand.config.schema import CriticInit, ModelConfig, ModelSource
from rlhand.errors import ModelLoadError
from rlhand.models.critic import Critic, NoCritic, SeparateCritic, SharedHeadCritic
from rlhand.models.plan import CriticKind, ModelPlan, ReferenceKind
from rlhand.models.sources import loading
from rlhand.models.value_head import SharedValueHead
from rlhand.models.weights import DTYPES, frozen_dtype


def policy_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase):
    """The policy's transformers config, without loading any weights."""
    if cfg.source is ModelSource.tiny:
        return tiny_config(cfg, tokenizer)
    with loading("model.policy", cfg.policy):
        return AutoConfig.from_pretrained(cfg.policy, trust_remote_code=cfg.trust_remote_code)


def tiny_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, **extra) -> GPT2Config:
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


def load_tiny(cfg: ModelConfig, tokenizer, plan: ModelPlan) -> tuple:
    """(policy, critic, reference copy or None, reward model or None), built from the config."""
    dtype = DTYPES[cfg.dtype.value]
    policy = GPT2LMHeadModel(tiny_config(cfg, tokenizer)).to(dtype)
    critic: Critic = NoCritic()
    if plan.critic is CriticKind.shared:
        critic = SharedHeadCritic(SharedValueHead(policy, cfg.n_embd, dtype))
    elif plan.critic is CriticKind.separate:
        model = GPT2ForSequenceClassification(tiny_config(cfg, tokenizer, num_labels=1)).to(dtype)
        # Critic starts from the policy backbone, with a fresh scalar head.
        model.transformer.load_state_dict(policy.transformer.state_dict())
        critic = SeparateCritic(model)
    reward_model = None
    if plan.reward_model:  # random weights: only useful for benchmarks with reward=model
        reward_model = GPT2ForSequenceClassification(tiny_config(cfg, tokenizer, num_labels=1)).to(dtype)
    ref = copy.deepcopy(policy) if plan.reference is ReferenceKind.copy else None
    return policy, critic, ref, reward_model


def load_hf(cfg: ModelConfig, tokenizer, plan: ModelPlan) -> tuple:
    """The same from model=hf folders or hub ids, each model loaded straight in the dtype it keeps
    (a frozen base in model.frozen_dtype), so a 0.5B LoRA run never holds fp32 copies it then
    drops; the reference is loaded again, not copied."""
    trained, frozen = DTYPES[cfg.dtype.value], frozen_dtype(cfg)
    kwargs = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    with loading("model.policy", cfg.policy):
        policy = AutoModelForCausalLM.from_pretrained(cfg.policy, dtype=frozen if cfg.lora.enabled else trained, **kwargs)
    reward_model = load_reward_model(cfg.reward_model, dtype=frozen, **kwargs) if plan.reward_model else None
    ref = None
    if plan.reference is ReferenceKind.copy:
        with loading("model.policy", cfg.policy):
            ref = AutoModelForCausalLM.from_pretrained(cfg.policy, dtype=frozen, **kwargs)
    critic: Critic = NoCritic()
    if plan.critic is CriticKind.shared:
        critic = SharedHeadCritic(SharedValueHead(policy, policy.config.hidden_size, trained))
    elif plan.critic is CriticKind.separate:
        critic = SeparateCritic(_load_critic(cfg, tokenizer, frozen if plan.lora_critic else trained, kwargs))
    return policy, critic, ref, reward_model


def _load_critic(cfg: ModelConfig, tokenizer, dtype, kwargs) -> PreTrainedModel:
    if cfg.critic is not None:
        field, critic_path = "model.critic", cfg.critic
    elif cfg.critic_init is CriticInit.reward_model:
        field, critic_path = "model.reward_model", cfg.reward_model
    else:
        field, critic_path = "model.policy", cfg.policy
    with loading(field, critic_path):
        model = AutoModelForSequenceClassification.from_pretrained(critic_path, num_labels=1, dtype=dtype, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_reward_model(path: str, field: str = "model.reward_model", **kwargs) -> PreTrainedModel:
    with loading(field, path):
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    if model.config.num_labels != 1:
        raise ModelLoadError(f"{field}: {path} has num_labels={model.config.num_labels}, a reward model needs 1")
    return model


def load_classifier(cfg: ModelConfig, tokenizer, dtype) -> PreTrainedModel:
    """A one-label sequence classifier with model.policy's backbone and a fresh score head (the
    built-in tiny GPT-2 from its config)."""
    if cfg.source is ModelSource.tiny:
        return GPT2ForSequenceClassification(tiny_config(cfg, tokenizer, num_labels=1)).to(dtype)
    kwargs = {"trust_remote_code": cfg.trust_remote_code, **({"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {})}
    with loading("model.policy", cfg.policy):
        model = AutoModelForSequenceClassification.from_pretrained(cfg.policy, num_labels=1, dtype=dtype, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model
