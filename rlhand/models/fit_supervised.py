"""The memory estimate of a supervised stage (stage=sft, stage=reward_model): the RL estimate's
terms (rlhand/models/fit.py) for one trained model and no rollout — its weights, gradients and
AdamW states (sharded over FSDP2's ranks), one batch's activations at the longest example, SFT's
output-layer chunk (a reward model has only its score head), FSDP2's gathered blocks."""

import torch

from rlhand.config.schema import Autocast, TrainConfig
from rlhand.core.logprobs import chunk_rows
from rlhand.distributed.layout import Layout, Parallel
from rlhand.models.fit import (
    BYTES,
    CPU_BASELINE,
    CUDA_CONTEXT,
    LORA_ACTIVATIONS,
    Estimate,
    Item,
    _activations,
    _available,
    _resident_items,
    dequantized_layer,
)
from rlhand.models.shapes import model_shapes


def estimate_supervised(cfg: TrainConfig, tokenizer, lengths: list[int], scored_tokens: int, layout: Layout, device: torch.device, name: str) -> Estimate | None:
    """`lengths`: each example's tokens in one forward; `scored_tokens`: the output layer's positions
    of one example (SFT: its completion; 0 for a reward model); `name`: the trained model's."""
    try:
        shape = model_shapes(cfg, tokenizer)["policy"]
    except Exception:  # noqa: BLE001 - no estimate is no reason to stop a run
        return None
    m, settings = cfg.model, getattr(cfg, "sft" if scored_tokens else "rm")
    compute = 2 if cfg.trainer.autocast is not Autocast.off else BYTES[m.dtype.value]
    resident = [Item(i.name.replace("policy", name), i.bytes) for i in _resident_items(cfg, {"policy": shape}, layout)]
    # One forward: a rank's share of a batch, or a micro-batch of it (a pair is two sequences)
    share = settings.batch_size / layout.ranks
    if settings.micro_batch_size is not None:
        share = min(share, settings.micro_batch_size)
    rows = share * (1 if scored_tokens else 2)
    seq = max(lengths)
    tokens = rows * sum(lengths) / len(lengths)
    if settings.micro_batch_tokens is not None:  # padded tokens per forward; a longer example goes alone
        tokens = min(tokens, max(settings.micro_batch_tokens, seq * (1 if scored_tokens else 2)))
        rows = min(rows, max(tokens / seq, 1))
    activations = _activations(shape, tokens, seq, compute, m.gradient_checkpointing)
    if m.lora.enabled:
        activations *= LORA_ACTIVATIONS
    update = [Item(f"{name} activations", activations), *dequantized_layer(cfg, {"policy": shape}, compute)]
    if scored_tokens:
        chunk_bytes = None if cfg.trainer.logits_chunk_mb is None else cfg.trainer.logits_chunk_mb * 2**20
        update.append(Item("output-layer logits", chunk_rows(shape.vocab, chunk_bytes, int(rows * scored_tokens)) * shape.vocab * 4 * 3))
    if layout.strategy is Parallel.fsdp:
        gathered = 2 if cfg.trainer.autocast is not Autocast.off else BYTES[m.dtype.value]
        update.append(Item("FSDP gathered blocks and root", (2 * shape.block_params + shape.root_params) * gathered))
    baseline = CUDA_CONTEXT if device.type == "cuda" else CPU_BASELINE
    return Estimate(resident, update, [], baseline, _available(cfg, device, layout.local_ranks))
