"""The shapes of a run's models, read from their configs alone: each model is built on the meta
device (parameters without storage), so a 7B model's shape costs no memory and no download beyond
its config.json. The memory estimate (fit.py) is arithmetic over these."""

import warnings
from dataclasses import dataclass

import torch

from rlhand.config.schema import CriticInit, ModelSource, TrainConfig
from rlhand.models.plan import CriticKind, ReferenceKind, model_plan
from rlhand.models.quantize import block_linears


@dataclass
class Shape:
    params: int  # every parameter (a tied weight once), adapters included
    trainable: int  # what the learner steps (all, LoRA adapters and a trained head, a value head)
    layers: int = 0
    hidden: int = 0
    heads: int = 0
    kv_dim: int = 0  # keys (or values) per token per layer
    intermediate: int = 0
    vocab: int = 0
    gated_mlp: bool = False  # SwiGLU-style (gate, up, down): Llama, Qwen, Mistral; GPT-2's is not
    attention: str = "sdpa"  # the attention implementation transformers picks for it (eager keeps the scores)
    block_params: int = 0  # parameters of one transformer block (what FSDP gathers at a time)
    root_params: int = 0  # parameters outside the blocks: embeddings, final norm, an untied output layer
    quantizable: int = 0  # weights of the blocks' linear layers: what model.quantization stores in 4 or 8 bits
    largest_linear: int = 0  # the largest of them (a quantized layer's weight is dequantized whole per forward)


def model_shapes(cfg: TrainConfig, tokenizer) -> dict[str, Shape]:
    """{"policy", "critic"?, "reference"?, "reward model"?: Shape}: what this run builds (the plan,
    rlhand/models/plan.py). Raises what reading a config raises (a hub id offline, a broken config.json)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    m, plan = cfg.model, model_plan(cfg)
    policy_config, critic_config, rm_config = _configs(cfg, tokenizer)
    lora = m.lora if m.lora.enabled else None
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = AutoModelForCausalLM.from_config(policy_config, **_attention(m))
        shapes = {"policy": _shape(policy, lora, "CAUSAL_LM")}
        if plan.critic is CriticKind.shared:
            hidden = shapes["policy"].hidden
            shapes["critic"] = Shape(params=hidden, trainable=hidden)
        elif plan.critic is CriticKind.separate and critic_config is not None:
            critic = AutoModelForSequenceClassification.from_config(critic_config, **_attention(m))
            shapes["critic"] = _shape(critic, lora if plan.lora_critic else None, "SEQ_CLS")
        if plan.reference is ReferenceKind.copy:
            policy_shape = shapes["policy"]
            shapes["reference"] = Shape(params=policy_shape.params, trainable=0, quantizable=policy_shape.quantizable, largest_linear=policy_shape.largest_linear)
        if plan.reward_model and rm_config is not None:
            rm = AutoModelForSequenceClassification.from_config(rm_config, **_attention(m))
            linears = [module.weight.numel() for _, module in block_linears(rm)]
            shapes["reward model"] = Shape(params=sum(p.numel() for p in rm.parameters()), trainable=0, quantizable=sum(linears), largest_linear=max(linears, default=0))
        for field, folder in scorer_models(cfg).items():
            scorer = AutoModelForSequenceClassification.from_config(_scorer_config(folder, m.trust_remote_code))
            shapes[f"scorer {field}"] = Shape(params=sum(p.numel() for p in scorer.parameters()), trainable=0)
    return shapes


def scorer_models(cfg: TrainConfig) -> dict[str, str]:
    """The reward-model folders among reward.components and eval.scorers (field -> folder): frozen,
    whole on every rank."""
    named = {f"reward.components.{k}": v for k, v in cfg.reward.components.items()}
    if cfg.eval.every > 0:
        named.update({f"eval.scorers.{k}": v for k, v in cfg.eval.scorers.items()})
    return {field: str(spec["model"]) for field, spec in named.items() if spec.get("model")}


def _scorer_config(folder: str, trust_remote_code: bool):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    config.num_labels = 1
    return config


def _configs(cfg: TrainConfig, tokenizer):
    from transformers import AutoConfig

    m = cfg.model
    if m.source is ModelSource.tiny:
        from rlhand.models.loaders import tiny_config

        return tiny_config(m, tokenizer), tiny_config(m, tokenizer, num_labels=1), tiny_config(m, tokenizer, num_labels=1)
    load = lambda path: AutoConfig.from_pretrained(path, trust_remote_code=m.trust_remote_code)  # noqa: E731
    critic_path = m.critic or (m.reward_model if m.critic_init is CriticInit.reward_model else m.policy)
    configs = [load(m.policy), load(critic_path) if critic_path else None, load(m.reward_model) if m.reward_model else None]
    for config in configs[1:]:
        if config is not None:
            config.num_labels = 1
    return configs


def _attention(m) -> dict:
    return {"attn_implementation": m.attn_implementation} if m.attn_implementation else {}


def _shape(model, lora, task: str) -> Shape:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    params = sum(p.numel() for p in model.parameters())
    blocks = [child for child in model.modules() if type(child).__name__ in set(getattr(model, "_no_split_modules", None) or [])]
    block_params = max((sum(p.numel() for p in block.parameters()) for block in blocks), default=0)
    linears = [module.weight.numel() for _, module in block_linears(model)]
    trainable = params
    if lora is not None:
        from rlhand.models.lora import add_lora

        trainable = sum(p.numel() for p in add_lora(model, lora, task).parameters() if p.requires_grad)
        params = params + trainable  # the adapters come on top of the frozen base
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd")
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer")
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    gated = any(name.endswith(("gate_proj", "gate_up_proj")) for name, _ in model.named_modules())
    return Shape(
        params, trainable, layers, hidden, heads, kv_heads * head_dim, intermediate, getattr(config, "vocab_size", 0),
        gated_mlp=gated,
        attention=str(getattr(config, "_attn_implementation", None) or "eager"),
        block_params=block_params,
        root_params=params - block_params * len(blocks) if blocks else params,
        quantizable=sum(linears),
        largest_linear=max(linears, default=0),
    )
