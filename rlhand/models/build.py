"""Policy, frozen reference, critic and (optional) reward model, from a tiny config or from_pretrained."""

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
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

from rlhand.config.schema import CriticBackbone, CriticInit, LoraCritic, ModelConfig, ModelSource
from rlhand.errors import ModelLoadError
from rlhand.models import unpadded
from rlhand.models.critic import Critic, NoCritic, SeparateCritic, SharedHeadCritic
from rlhand.models.forward import ForwardLimits
from rlhand.models.lora import add_lora
from rlhand.models.sources import loading
from rlhand.models.value_head import SharedValueHead

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Models:
    policy: PreTrainedModel  # with LoRA: a PEFT model around it
    critic: Critic  # a model of its own, or a head on the policy (rlhand/models/critic.py)
    ref: Optional[PreTrainedModel]  # a frozen copy of the policy; None when no KL term needs one or with LoRA
    reward_model: Optional[PreTrainedModel]  # None when a reward function scores
    # LoRA: the reference is the policy's base, its adapters switched off (no second copy).
    reference_is_base: bool = False
    # How large the pieces of their forwards may be (logit chunks, scoring micro-batches).
    limits: ForwardLimits = field(default_factory=ForwardLimits)

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.policy, self.critic.module, self.ref, self.reward_model) if m is not None]

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


def build_models(
    cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, *, need_ref: bool, need_reward_model: bool, device: torch.device, need_critic: bool = True
) -> Models:
    """`need_critic` False (a critic-free estimator): no value model is built or loaded at all."""
    build = _build_tiny if cfg.source is ModelSource.tiny else _build_hf
    models = build(cfg, tokenizer, need_ref and not cfg.lora.enabled, need_reward_model, need_critic)
    frozen_dtype = DTYPES[(cfg.frozen_dtype or cfg.dtype).value]
    for frozen in (models.ref, models.reward_model):
        if frozen is not None:
            frozen.to(frozen_dtype).requires_grad_(False)
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
        models.policy = add_lora(models.policy, cfg.lora, "CAUSAL_LM")
        if isinstance(models.critic, SharedHeadCritic):
            models.critic.module.rebind(models.policy)
        elif cfg.lora.critic is LoraCritic.lora and isinstance(models.critic, SeparateCritic):
            models.critic = SeparateCritic(add_lora(models.critic.module, cfg.lora, "SEQ_CLS"))
        models.reference_is_base = need_ref
        # Under LoRA the trained models' bases are frozen too: they take frozen_dtype, the adapters
        # (and a trained head) model.dtype. The reference (the base, adapters off) follows.
        for model in (models.policy, models.critic.module if isinstance(models.critic, SeparateCritic) else None):
            if model is not None:
                cast_by_role(model, trained=DTYPES[cfg.dtype.value], frozen=frozen_dtype)
    return models


def cast_by_role(model: nn.Module, *, trained: torch.dtype, frozen: torch.dtype) -> None:
    """Every parameter that trains in `trained`, every other in `frozen` (a tied weight once: it is
    one parameter). A model=hf base is loaded in its dtype already; this catches what PEFT adds."""
    for param in model.parameters():
        dtype = trained if param.requires_grad else frozen
        if param.dtype != dtype:
            param.data = param.data.to(dtype)


def enable_activation_checkpointing(model: PreTrainedModel) -> None:
    """Non-reentrant checkpointing of every block (transformers 5.24 renamed the method)."""
    kwargs = {"use_reentrant": False}
    if hasattr(type(model), "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def prepare(model: nn.Module, device: torch.device) -> None:
    """Dropout off for good: eval mode (gradients still flow) and p=0, so log-probs of a sample
    are the same at rollout and at update and the first PPO ratio is exactly 1. The config's
    dropout rates go to 0 too: gradient checkpointing runs the update forward in train mode, where
    models read them (attention_dropout, ...)."""
    model.to(device)
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    if config is not None:
        for key, value in list(vars(config).items()):
            if (key.endswith("dropout") or key.endswith("pdrop")) and isinstance(value, float):
                setattr(config, key, 0.0)
        if getattr(config, "use_cache", None) is not None:
            config.use_cache = False  # the sampler asks for a cache explicitly
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(output, nn.Linear):
        output.register_forward_pre_hook(_contiguous_half_input)


def _contiguous_half_input(module: nn.Module, args: tuple):
    """torch's CPU linear in bf16 / fp16 on a non-contiguous 3D input (the last position that
    transformers slices off for logits_to_keep=1, every sampling prefill) allocates ~2 GB beside
    a 151,936 x 896 output layer (measured, torch 2.13): a contiguous copy of the few rows it
    needs costs nothing. float32 is not affected and is left as it is."""
    (hidden,) = args
    if hidden.dtype in (torch.bfloat16, torch.float16) and not hidden.is_contiguous():
        return (hidden.contiguous(),)
    return None


def policy_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase):
    """The policy's transformers config, without loading any weights."""
    if cfg.source is ModelSource.tiny:
        return _tiny_config(cfg, tokenizer)
    from transformers import AutoConfig

    with loading("model.policy", cfg.policy):
        return AutoConfig.from_pretrained(cfg.policy, trust_remote_code=cfg.trust_remote_code)


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


def _build_tiny(cfg: ModelConfig, tokenizer, need_ref: bool, need_reward_model: bool, need_critic: bool) -> Models:
    dtype = DTYPES[cfg.dtype.value]
    policy = GPT2LMHeadModel(_tiny_config(cfg, tokenizer)).to(dtype)
    if not need_critic:
        critic = NoCritic()
    elif cfg.critic_backbone is CriticBackbone.shared:
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


def _build_hf(cfg: ModelConfig, tokenizer, need_ref: bool, need_reward_model: bool, need_critic: bool) -> Models:
    """Each model loaded straight in the dtype it keeps (a frozen base in model.frozen_dtype), so a
    0.5B LoRA run never holds fp32 copies it then drops; the reference is loaded again, not copied."""
    trained, frozen = DTYPES[cfg.dtype.value], DTYPES[(cfg.frozen_dtype or cfg.dtype).value]
    kwargs = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    with loading("model.policy", cfg.policy):
        policy = AutoModelForCausalLM.from_pretrained(cfg.policy, dtype=frozen if cfg.lora.enabled else trained, **kwargs)
    reward_model = load_reward_model(cfg.reward_model, dtype=frozen, **kwargs) if need_reward_model else None
    ref = None
    if need_ref:
        with loading("model.policy", cfg.policy):
            ref = AutoModelForCausalLM.from_pretrained(cfg.policy, dtype=frozen, **kwargs)
    if not need_critic:
        return Models(policy=policy, critic=NoCritic(), ref=ref, reward_model=reward_model)
    if cfg.critic_backbone is CriticBackbone.shared:
        critic = SharedHeadCritic(SharedValueHead(policy, policy.config.hidden_size, trained))
        return Models(policy=policy, critic=critic, ref=ref, reward_model=reward_model)
    if cfg.critic is not None:
        field, critic_path = "model.critic", cfg.critic
    elif cfg.critic_init is CriticInit.reward_model:
        field, critic_path = "model.reward_model", cfg.reward_model
    else:
        field, critic_path = "model.policy", cfg.policy
    lora_critic = cfg.lora.enabled and cfg.lora.critic is LoraCritic.lora
    with loading(field, critic_path):
        model = AutoModelForSequenceClassification.from_pretrained(critic_path, num_labels=1, dtype=frozen if lora_critic else trained, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return Models(policy=policy, critic=SeparateCritic(model), ref=ref, reward_model=reward_model)


def load_reward_model(path: str, **kwargs) -> PreTrainedModel:
    with loading("model.reward_model", path):
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    if model.config.num_labels != 1:
        raise ModelLoadError(f"model.reward_model: {path} has num_labels={model.config.num_labels}, a reward model needs 1")
    return model
