"""Will the composed config fit the device? An estimate of the peak bytes per device, made before any
model loads, from the models' configs alone (rlhand/models/shapes.py: meta-device shapes).

peak = the process baseline + overhead x (resident state + the larger of the update's and the
rollout's working set), where
- resident state: each model's weights in their dtype (a LoRA model's frozen base in
  model.frozen_dtype; quantized, its blocks' linear layers at 4.5 or 8 bits a weight with their
  scales, models/quantize.py, and one such layer dequantized at a time), and for what trains its gradients and AdamW's two moments; divided by the
  ranks where FSDP2 shards them; a vLLM engine's own weights and KV cache on a CPU (or its whole
  reservation on a GPU when it does not sleep);
- update working set: the activations one micro-batch keeps for its backward, for every trained
  model (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models":
  per token and layer 11h for attention and 4h for the norms, in 16-bit units; the MLP's own
  inputs, 2h + 8I for a gated MLP (SwiGLU: gate, up, their product and activation), 19h scaled to
  the width for GPT-2's; the attention scores, 5as, only for eager attention; with gradient
  checkpointing each layer's input plus one layer in full); one chunk of the output layer's
  float32 logits, three times (logits, softmax, their gradient: rlhand/core/logprobs.py); under
  FSDP the all-gathered blocks in flight and the root's parameters;
- rollout working set: generation's KV cache and its per-step logits, the largest no-grad
  scoring forward's activations (trainer.score_max_tokens) and logits chunk, under FSDP the policy
  gathered for sampling (in the autocast dtype with mixed precision), a vLLM engine's reservation
  on a GPU and its weight-push bucket.
Measured constants (2-core CPU, 2026-11-30 and 2026-12-04, docs/memory.md): the baseline (torch +
transformers + rlhand imported: 0.36 GB RSS; on CUDA the context, about 0.5 GB), an allocator
overhead of 20% (12% fitted the small GPT-2 settings; Qwen2.5 0.5B and 1.5B runs, full and LoRA, on
1 and 2 ranks needed 20%), and LoRA's activations at twice a full model's (its adapters keep their
inputs beside the frozen layers': measured on 8 layers x 512). On a CPU the processes of one
machine share its memory: each rank plans for its share of it.
"""

from dataclasses import dataclass

import torch

from rlhand.config.schema import Autocast, Engine, FitCheck, Quantization, TrainConfig
from rlhand.core.logprobs import chunk_rows
from rlhand.distributed.layout import Layout, Parallel
from rlhand.models.plan import model_plan
from rlhand.models.quantize import quantized_bytes
from rlhand.models.scoring import rows_per_part
from rlhand.models.shapes import Shape, model_shapes

GIB = 2**30
CPU_BASELINE = 0.36 * GIB
CUDA_CONTEXT = 0.5 * GIB
OVERHEAD = 1.2
LORA_ACTIVATIONS = 2.0
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
BASELINE = "process baseline"


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

    def items(self) -> list[Item]:
        """Everything the total adds up, with the overhead applied, the baseline included."""
        return [Item(BASELINE, self.baseline)] + [Item(i.name, OVERHEAD * i.bytes) for i in self.resident + self.working]

    def biggest(self) -> Item:
        return max(self.items(), key=lambda item: item.bytes)

    def line(self) -> str:
        parts = ", ".join(f"{i.name} {i.bytes / GIB:.2f}" for i in sorted(self.items(), key=lambda i: -i.bytes)[:4])
        budget = f" of {self.available / GIB:.1f} GiB" if self.available else ""
        return f"memory estimate: {self.total / GIB:.2f} GiB per device{budget} (largest, GiB: {parts})"


def estimate_memory(cfg: TrainConfig, tokenizer, prompt_lengths: list[int], layout: Layout, device: torch.device) -> Estimate | None:
    """The estimate for this run on each device of the layout, or None when a model's config cannot
    be read without loading it (a hub id offline, say)."""
    try:
        shapes = model_shapes(cfg, tokenizer)
    except Exception:  # noqa: BLE001 - no estimate is no reason to stop a run
        return None
    return estimate_from_shapes(cfg, shapes, prompt_lengths, layout, device)


def estimate_from_shapes(cfg: TrainConfig, shapes: dict[str, Shape], prompt_lengths: list[int], layout: Layout, device: torch.device) -> Estimate:
    m, algo, gen, n = cfg.model, cfg.algo, cfg.generation, layout.ranks
    fsdp = layout.strategy is Parallel.fsdp
    weight_bytes = BYTES[m.dtype.value]
    autocast = cfg.trainer.autocast is not Autocast.off
    compute_bytes = 2 if autocast else weight_bytes
    policy = shapes["policy"]
    resident = _resident_items(cfg, shapes, layout)
    # Tokens: packed forwards carry the real ones, padded ones the longest prompt; responses at their limit.
    prompt = (sum(prompt_lengths) / len(prompt_lengths)) if m.remove_padding else max(prompt_lengths)
    seq = max(prompt_lengths) + gen.max_new_tokens
    rows = (algo.rollout_batch_size + (cfg.replay.sample_size if cfg.replay.enabled else 0)) / n
    micro_rows = rows / algo.num_minibatches / algo.grad_accum_steps
    micro_tokens = micro_rows * (prompt + gen.max_new_tokens)
    update = []
    for name in ("policy", "critic"):
        shape = shapes.get(name)
        if shape is None or not shape.layers:
            continue
        activations = _activations(shape, micro_tokens, seq, compute_bytes, m.gradient_checkpointing)
        if m.lora.enabled and shape.trainable < shape.params:
            activations *= LORA_ACTIVATIONS
        update.append(Item(f"{name} activations", activations))
    chunk_bytes = None if cfg.trainer.logits_chunk_mb is None else cfg.trainer.logits_chunk_mb * 2**20
    update_rows = chunk_rows(policy.vocab, chunk_bytes, int(micro_rows * gen.max_new_tokens))
    update.append(Item("policy logits", update_rows * policy.vocab * 4 * 3))
    gather_bytes = 2 if autocast and fsdp else weight_bytes  # FSDP2's mixed precision gathers in the autocast dtype
    if fsdp:
        update.append(Item("FSDP gathered blocks and root", (2 * policy.block_params + policy.root_params) * gather_bytes))
    update += dequantized_layer(cfg, shapes, compute_bytes)  # in the update's forwards and backwards
    batch = algo.rollout_batch_size / n
    score_rows = rows_per_part(int(batch), seq, cfg.trainer.score_max_tokens)
    rollout = [
        Item("generation KV cache", batch * seq * policy.layers * 2 * policy.kv_dim * compute_bytes),
        Item("sampling logits", batch * policy.vocab * 4 * 4),
        Item("scoring activations", score_rows * seq * (3 * policy.intermediate + 4 * policy.hidden) * compute_bytes),
        Item("scoring logits", chunk_rows(policy.vocab, chunk_bytes, int(score_rows * gen.max_new_tokens)) * policy.vocab * 4 * 2),
    ]
    if fsdp:
        # The whole policy stays gathered through the rollout; each module's all-gather lands in a
        # buffer that is then copied out into its parameters (one block's worth of both at once).
        rollout.append(Item("policy gathered for sampling", (policy.params + policy.block_params) * gather_bytes))
        critic = shapes.get("critic")
        if critic is not None and critic.layers:  # a critic of its own scores while the policy is gathered
            rollout.append(Item("critic gathered blocks and root", (2 * critic.block_params + critic.root_params) * gather_bytes))
    rollout += dequantized_layer(cfg, shapes, compute_bytes)  # and in sampling's and scoring's
    _engine_items(cfg, policy, device, seq, batch, resident, rollout)
    baseline = CUDA_CONTEXT if device.type == "cuda" else CPU_BASELINE
    return Estimate(resident, update, rollout, baseline, _available(cfg, device, layout.local_ranks))


def _resident_items(cfg: TrainConfig, shapes: dict[str, Shape], layout: Layout) -> list[Item]:
    """Weights, gradients and AdamW states of the trained models (sharded over the trained shards);
    frozen models' weights (LoRA's base in the frozen dtype)."""
    m, shard = cfg.model, layout.trained_shards
    weight_bytes = BYTES[m.dtype.value]
    frozen_bytes = BYTES[(m.frozen_dtype or m.dtype).value]
    resident = []
    for name in ("policy", "critic"):
        shape = shapes.get(name)
        if shape is None:
            continue
        frozen = shape.params - shape.trainable
        if m.lora.enabled:
            # What models/build.py quantizes: the policy's base, and a critic's when LoRA trains it (not a shared head's).
            quantized = m.quantization is not Quantization.none and (name == "policy" or (shape.layers > 0 and model_plan(cfg).lora_critic))
            frozen_total = frozen_weight_bytes(frozen, shape.quantizable if quantized else 0, frozen_bytes, m.quantization.value)
        else:
            frozen_total = frozen * weight_bytes
        resident += [
            Item(f"{name} weights", (shape.trainable * weight_bytes + frozen_total) / shard),
            Item(f"{name} gradients", shape.trainable * weight_bytes / shard),
            Item(f"{name} AdamW states", shape.trainable * 2 * weight_bytes / shard),
        ]
    for name in ("reference", "reward model"):
        if name in shapes:
            shape, kind = shapes[name], m.frozen_quantization
            quantized = shape.quantizable if kind is not Quantization.none else 0
            resident.append(Item(f"{name} weights", frozen_weight_bytes(shape.params, quantized, frozen_bytes, kind.value) / layout.frozen_shards))
    for name, shape in shapes.items():
        if name.startswith("scorer "):  # a component's or validation's reward model: whole on every rank
            resident.append(Item(f"{name} weights", shape.params * frozen_bytes))
    return resident


def frozen_weight_bytes(params: int, quantized: int, element: int, kind: str) -> float:
    """`params` frozen weights of which `quantized` are stored in `kind` (models/quantize.py), the rest in `element` bytes each."""
    return (params - quantized) * element + (quantized_bytes(quantized, kind) if quantized else 0)


def dequantized_layer(cfg: TrainConfig, shapes: dict[str, Shape], compute_bytes: int) -> list[Item]:
    """A quantized layer's weight dequantized whole in each forward and backward (the largest, once)."""
    m = cfg.model
    if m.quantization is Quantization.none and m.frozen_quantization is Quantization.none:
        return []
    return [Item("dequantized layer weight", max(s.largest_linear for s in shapes.values()) * compute_bytes)]


def _activations(shape: Shape, tokens: float, seq: int, element: int, checkpointed: bool) -> float:
    """Bytes one micro-batch keeps for the backward (per layer and token: Korthikanti et al.'s 11h
    for attention and 4h for the norms in 16-bit units; the MLP's stored inputs; eager attention's
    scores and softmax, 5 a s)."""
    h, width = shape.hidden, shape.intermediate or 4 * shape.hidden
    mlp = 2 * h + 8 * width if shape.gated_mlp else 19 * h * width / (4 * h)
    per_token = (15 * h + mlp) * element / 2
    if shape.attention == "eager":
        per_token += 5 * shape.heads * seq * element / 2
    layer = tokens * per_token
    if checkpointed:
        return shape.layers * tokens * h * element + layer
    return shape.layers * layer


def _engine_items(cfg: TrainConfig, policy: Shape, device: torch.device, seq: int, rows: float, resident: list, rollout: list) -> None:
    """A vLLM engine's memory: on a GPU its reservation (gpu_memory_utilization of the device) while it
    is awake, always when it does not sleep; on a CPU its weights and KV cache (sleep does nothing there).
    The weight push sends one block at a time in the engine's dtype."""
    gen = cfg.generation
    if gen.engine is not Engine.vllm:
        return
    engine_bytes = 2 if cfg.trainer.autocast is not Autocast.off and device.type == "cuda" else BYTES[cfg.model.dtype.value]
    rollout.append(Item("vLLM weight push", max(policy.block_params, policy.root_params) * engine_bytes))
    if device.type == "cuda":
        total = _available(cfg, device, None) or 0
        (rollout if gen.vllm_sleep else resident).append(Item("vLLM reservation", gen.gpu_memory_utilization * total))
        return
    resident.append(Item("vLLM engine weights", policy.params * engine_bytes))
    resident.append(Item("vLLM KV cache", kv_cache_bytes(policy.layers, policy.kv_dim, int(rows), seq, engine_bytes)))


def kv_cache_bytes(layers: int, kv_dim: int, rows: int, seq: int, element: int) -> int:
    """Keys and values of every layer for `rows` sequences of `seq` tokens, with a quarter spare for
    vLLM's block rounding; at least 64 MiB (what rlhand gives a vLLM engine on a CPU)."""
    return max(64 * 2**20, int(1.25 * rows * seq * 2 * layers * kv_dim * element))


def _available(cfg: TrainConfig, device: torch.device, local_ranks: int | None) -> float | None:
    if cfg.trainer.device_memory_gb is not None:
        return cfg.trainer.device_memory_gb * GIB
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        with open("/proc/meminfo") as handle:
            total_kib = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal:"))
        return total_kib * 1024 / max(local_ranks or 1, 1)  # a CPU's memory is every local rank's
    except (OSError, StopIteration, ValueError):
        return None


# What lightens each kind of item (the suggestions in the error line).
LIGHTER = (
    (("AdamW states", "gradients"), "model.lora.enabled=true, more ranks (FSDP2 shards them), trainer.offload=true"),
    (
        ("policy weights", "critic weights"),
        "model.lora.enabled=true with model.frozen_dtype=bfloat16, then model.quantization=nf4 (QLoRA), model.critic_backbone=shared, more ranks",
    ),
    (
        ("reference weights", "reward model weights"),
        "model.frozen_dtype=bfloat16, model.frozen_quantization=int8 or nf4, model.lora.enabled=true (the reference is then the base), trainer.frozen_models=shard",
    ),
    (("dequantized",), "nothing: one layer's weight, the price of quantized weights"),
    (("activations",), "model.gradient_checkpointing=true, more algo.grad_accum_steps, fewer generation.max_new_tokens"),
    (("policy logits", "scoring logits"), "a smaller trainer.logits_chunk_mb, more algo.grad_accum_steps"),
    (("scoring activations",), "a smaller trainer.score_max_tokens"),
    (("generation KV cache", "sampling logits"), "a smaller algo.rollout_batch_size or generation.max_new_tokens, more ranks"),
    (("gathered",), "trainer.autocast=bfloat16 (FSDP2 gathers in bf16), trainer.strategy=fsdp with more ranks"),
    (("vLLM",), "a smaller generation.gpu_memory_utilization, generation.vllm_sleep=true, or generation.engine=hf"),
    ((BASELINE,), "nothing in the config: the device is smaller than the process itself"),
)


def lighter(item: str, section: str | None = None) -> str:
    """What lightens `item`; `section` (sft, rm): a supervised stage, whose forwards split by its micro-batches."""
    levers = next((levers for names, levers in LIGHTER if any(name in item for name in names)), "model.lora.enabled=true, more ranks")
    if section:
        levers = levers.replace(", fewer generation.max_new_tokens", "").replace("more algo.grad_accum_steps", f"a smaller {section}.micro_batch_size or {section}.micro_batch_tokens")
    return levers


def supervised_section(cfg: TrainConfig) -> str | None:
    return {"sft": "sft", "reward_model": "rm"}.get(cfg.stage.value)


def check_fit(estimate: Estimate | None, cfg: TrainConfig) -> str:
    """The estimate's line for the log; an error naming the biggest item, and what lightens it, when
    it is over the device's memory (trainer.fit_check=warn or off lets it run)."""
    if estimate is None:
        return "memory estimate: none (a model's config could not be read before loading it)"
    line = estimate.line()
    over = estimate.available is not None and estimate.total > estimate.available
    if over and cfg.trainer.fit_check is FitCheck.error:
        from rlhand.config.load import ConfigError

        big = estimate.biggest()
        raise ConfigError(
            f"memory: the estimate is {estimate.total / GIB:.1f} GiB per device, over the {estimate.available / GIB:.1f} GiB "
            f"available; the biggest item is {big.name} ({big.bytes / GIB:.1f} GiB). Lighter: {lighter(big.name, supervised_section(cfg))}; "
            "or trainer.fit_check=warn to run anyway"
        )
    return line + (" - over the device's memory" if over else "")
