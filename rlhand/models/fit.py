"""Will the composed config fit the device? An estimate of the peak bytes per device, made before any
model loads, from the models' configs alone (instantiated on the meta device: shapes, no weights).

peak = process baseline + overhead x (resident state + the larger of the update's and the rollout's
working set), where
- resident state: each model's weights (in their dtype), and for what trains its fp32 gradients and
  AdamW's two fp32 moments; divided by the ranks where FSDP2 shards them;
- update working set: the activations one micro-batch keeps for its backward (Korthikanti et al.
  2022, "Reducing Activation Recomputation in Large Transformer Models": s·b·h·(34 + 5·a·s/h) bytes
  per layer in 16-bit, the MLP part scaled to the model's own width; the attention-score term
  only for eager attention; with gradient checkpointing one layer in full plus each layer's
  input) for every trained model, and the policy's logits (three float32 copies: logits,
  softmax for the entropy, log-sum-exp);
- rollout working set: the KV cache of generation, the scoring forwards' logits, and under FSDP
  the policy gathered whole for sampling.
Measured constants (2-core CPU, 2026-11-30, docs/memory.md): the baseline (torch + transformers +
rlhand imported: 0.36 GB RSS; on CUDA the context, about 0.5 GB), an allocator overhead of 12%,
and LoRA's activations at twice a full model's (its adapters keep their inputs beside the frozen
layers': measured on 8 layers x 512).
"""

import warnings
from dataclasses import dataclass

import torch

from rlhand.config.schema import (
    Autocast,
    CriticBackbone,
    FrozenModels,
    LoraCritic,
    ModelSource,
    RewardKind,
    Strategy,
    TrainConfig,
)

GIB = 2**30
CPU_BASELINE = 0.36 * GIB
CUDA_CONTEXT = 0.5 * GIB
OVERHEAD = 1.12
LORA_ACTIVATIONS = 2.0
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Item:
    name: str
    bytes: float


@dataclass
class Estimate:
    resident: list[Item]
    update: list[Item]
    rollout: list[Item]
    baseline: float
    available: float | None  # bytes per device to plan for; None: unknown

    @property
    def working(self) -> list[Item]:
        return self.update if sum(i.bytes for i in self.update) >= sum(i.bytes for i in self.rollout) else self.rollout

    @property
    def total(self) -> float:
        return self.baseline + OVERHEAD * sum(i.bytes for i in self.resident + self.working)

    def biggest(self) -> Item:
        return max(self.resident + self.working, key=lambda item: item.bytes)

    def line(self) -> str:
        parts = ", ".join(f"{i.name} {i.bytes / GIB:.2f}" for i in sorted(self.resident + self.working, key=lambda i: -i.bytes)[:4])
        budget = f" of {self.available / GIB:.1f} GiB" if self.available else ""
        return f"memory estimate: {self.total / GIB:.2f} GiB per device{budget} (largest, GiB: {parts})"


@dataclass
class Shape:
    params: int  # every parameter
    trainable: int  # what the learner steps (all, LoRA adapters, a head)
    layers: int = 0
    hidden: int = 0
    heads: int = 0
    kv_dim: int = 0  # keys (or values) per token per layer
    intermediate: int = 0
    vocab: int = 0


def estimate_memory(cfg: TrainConfig, tokenizer, prompt_lengths: list[int], world_size: int, device: torch.device) -> Estimate | None:
    """The estimate for this run on each of `world_size` devices, or None when a model's config cannot
    be read without loading it (a hub id offline, say)."""
    try:
        shapes = _shapes(cfg, tokenizer)
    except Exception:  # noqa: BLE001 - no estimate is no reason to stop a run
        return None
    m, algo, n = cfg.model, cfg.algo, world_size
    fsdp = n > 1 and cfg.trainer.strategy in (Strategy.auto, Strategy.fsdp)
    shard = n if fsdp else 1
    weight_bytes = BYTES[m.dtype.value]
    frozen_bytes = BYTES[(m.frozen_dtype or m.dtype).value]
    compute_bytes = 2 if cfg.trainer.autocast is not Autocast.off else 4
    policy = shapes["policy"]
    resident = []
    for name, shape in (("policy", policy), ("critic", shapes.get("critic"))):
        if shape is None:
            continue
        frozen = shape.params - shape.trainable
        resident += [
            Item(f"{name} weights", (shape.trainable * 4 + frozen * weight_bytes) / shard),
            Item(f"{name} gradients", shape.trainable * 4 / shard),
            Item(f"{name} AdamW states", shape.trainable * 8 / shard),
        ]
    frozen_shard = n if n > 1 and cfg.trainer.frozen_models is FrozenModels.shard else 1
    for name in ("reference", "reward model"):
        if name in shapes:
            resident.append(Item(f"{name} weights", shapes[name].params * frozen_bytes / frozen_shard))
    # Tokens: packed forwards carry the real ones, padded ones the longest prompt; responses at their limit.
    prompt = (sum(prompt_lengths) / len(prompt_lengths)) if m.remove_padding else max(prompt_lengths)
    seq = max(prompt_lengths) + cfg.generation.max_new_tokens
    rows = (algo.rollout_batch_size + (cfg.replay.sample_size if cfg.replay.enabled else 0)) / n
    micro_rows = rows / algo.num_minibatches / algo.grad_accum_steps
    micro_tokens = micro_rows * (prompt + cfg.generation.max_new_tokens)
    update = []
    for name in ("policy", "critic"):
        shape = shapes.get(name)
        if shape is None or not shape.layers:
            continue
        activations = _activations(shape, micro_tokens, seq, compute_bytes, m.gradient_checkpointing, m.attn_implementation)
        if m.lora.enabled and shape.trainable < shape.params:
            activations *= LORA_ACTIVATIONS
        update.append(Item(f"{name} activations", activations))
    update.append(Item("policy logits", micro_tokens * policy.vocab * 4 * 3))
    batch = algo.rollout_batch_size / n
    rollout = [
        Item("generation KV cache", batch * seq * policy.layers * 2 * policy.kv_dim * compute_bytes),
        Item("scoring logits", batch * cfg.generation.max_new_tokens * policy.vocab * 4 * 2),
    ]
    if fsdp:
        rollout.append(Item("policy gathered for sampling", policy.params * weight_bytes * (1 - 1 / n)))
    baseline = CUDA_CONTEXT if device.type == "cuda" else CPU_BASELINE
    return Estimate(resident, update, rollout, baseline, _available(cfg, device))


def _activations(shape: Shape, tokens: float, seq: int, element: int, checkpointed: bool, attention: str | None) -> float:
    """Bytes one micro-batch keeps for the backward (per layer: Korthikanti et al.'s 34 h in 16-bit
    units, 19 h of which the 4h-wide MLP's, scaled to the model's own MLP width)."""
    h = shape.hidden
    mlp = 19 * h * (shape.intermediate / (4 * h) if shape.intermediate else 1.0)
    per_token = (15 * h + mlp) * element / 2
    if attention in (None, "eager"):  # scores and softmax kept for each head: (a s) per token
        per_token += 5 * shape.heads * seq * element / 2
    layer = tokens * per_token
    if checkpointed:
        return shape.layers * tokens * h * element + layer
    return shape.layers * layer


def _available(cfg: TrainConfig, device: torch.device) -> float | None:
    if cfg.trainer.device_memory_gb is not None:
        return cfg.trainer.device_memory_gb * GIB
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        with open("/proc/meminfo") as handle:
            total_kib = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal:"))
        return total_kib * 1024
    except (OSError, StopIteration, ValueError):
        return None


def _shapes(cfg: TrainConfig, tokenizer) -> dict[str, Shape]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    m = cfg.model
    if m.source is ModelSource.tiny:
        from rlhand.models.build import _tiny_config

        policy_config = _tiny_config(m, tokenizer)
        critic_config = rm_config = _tiny_config(m, tokenizer, num_labels=1)
    else:
        load = lambda path: AutoConfig.from_pretrained(path, trust_remote_code=m.trust_remote_code)  # noqa: E731
        policy_config = load(m.policy)
        critic_path = m.critic or (m.reward_model if m.critic_init.value == "reward_model" else m.policy)
        critic_config = load(critic_path) if critic_path else None
        if critic_config is not None:
            critic_config.num_labels = 1
        rm_config = load(m.reward_model) if m.reward_model else None
        if rm_config is not None:
            rm_config.num_labels = 1
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = AutoModelForCausalLM.from_config(policy_config)
        shapes = {"policy": _shape(policy, m.lora if m.lora.enabled else None, "CAUSAL_LM")}
        if not cfg.algo.estimator.needs_critic:
            pass  # a critic-free estimator builds none
        elif m.critic_backbone is CriticBackbone.shared:
            hidden = shapes["policy"].hidden
            shapes["critic"] = Shape(params=hidden, trainable=hidden)
        elif critic_config is not None:
            critic = AutoModelForSequenceClassification.from_config(critic_config)
            lora = m.lora if m.lora.enabled and m.lora.critic is LoraCritic.lora else None
            shapes["critic"] = _shape(critic, lora, "SEQ_CLS")
        if (cfg.algo.kl_coef > 0 or cfg.algo.kl_control.value == "adaptive") and not m.lora.enabled:
            shapes["reference"] = Shape(params=shapes["policy"].params, trainable=0)
        if cfg.reward.kind is RewardKind.model and rm_config is not None:
            rm = AutoModelForSequenceClassification.from_config(rm_config)
            shapes["reward model"] = Shape(params=sum(p.numel() for p in rm.parameters()), trainable=0)
    return shapes


def _shape(model, lora, task: str) -> Shape:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    params = sum(p.numel() for p in model.parameters())
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
    return Shape(params, trainable, layers, hidden, heads, kv_heads * head_dim, intermediate, getattr(config, "vocab_size", 0))


def check_fit(estimate: Estimate | None, cfg: TrainConfig) -> str:
    """The estimate's line for the log; an error naming the biggest item when it is over the device's
    memory (trainer.fit_check=warn or off lets it run)."""
    if estimate is None:
        return "memory estimate: none (a model's config could not be read before loading it)"
    line = estimate.line()
    over = estimate.available is not None and estimate.total > estimate.available
    if over and cfg.trainer.fit_check.value == "error":
        from rlhand.config.load import ConfigError

        big = estimate.biggest()
        raise ConfigError(
            f"memory: the estimate is {estimate.total / GIB:.1f} GiB per device, over the {estimate.available / GIB:.1f} GiB "
            f"available; the biggest item is {big.name} ({big.bytes / GIB:.1f} GiB). Lighter: model.lora.enabled=true, "
            "model.gradient_checkpointing=true, more algo.grad_accum_steps, more ranks; or trainer.fit_check=warn to run anyway"
        )
    return line + (" - over the device's memory" if over else "")

