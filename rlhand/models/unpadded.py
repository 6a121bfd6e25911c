"""Padding-free forwards (`model.remove_padding`): the linear layers, MLPs and norms see only real tokens.

A (B, T) batch with padding becomes one packed row of its N real tokens, with each sequence's own
position ids. Attention is the one place where sequences must stay apart: a wrapper registered
with transformers' AttentionInterface scatters q/k/v back to (B, T), runs the model's own eager
or sdpa attention there under a causal + padding mask, and gathers the N real rows again. The
result equals the padded forward (the same math on fewer rows); padding after EOS and left-padded
prompts cost no matmul work. verl (use_remove_padding) and OpenRLHF (packing_samples) do this
with flash-attention's varlen kernels; this works on CPU and with any model that routes attention
through the interface.
"""

import sys
from contextlib import contextmanager

import torch
from torch import Tensor
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from rlhand.config.schema import REMOVE_PADDING_ATTENTION
from rlhand.errors import UserError

IMPLEMENTATION = "rlhand_unpadded"  # + "_eager" or "_sdpa": the model's own attention underneath
BASES = REMOVE_PADDING_ATTENTION
# The packed row is rounded up to a multiple of this many tokens (a few pads ride along) to bound
# the number of distinct shapes: oneDNN caches bf16 kernels per shape. Bench, bf16 autocast, peak
# RSS after 30 iterations: 1567 MiB with exact lengths, 1374 MiB at 64, 1260 MiB padded; fp32
# stays flat at 681 MiB. 16 wastes ~8 tokens per forward.
ROW_MULTIPLE = 16


class Packing:
    """Where the N real tokens of a (B, T) batch live, and the mask attention uses in (B, T).

    A plain class, not a dataclass: FSDP2 (with mixed precision) rebuilds every dataclass it finds
    among a forward's arguments, and each block would then count its attention calls on a copy."""

    def __init__(self, rows: Tensor, slot: Tensor, batch: int, length: int, mask: Tensor):
        self.rows = rows  # (N,) index in the flattened (B*T) batch of each packed token: the real ones, then pads to round N up
        self.slot = slot  # (B, T) the packed index of each position (meaningful where real)
        self.batch, self.length = batch, length
        self.mask = mask  # (B, 1, T, T) bool: causal, real keys only; pad queries see themselves (no empty rows)
        self.calls = 0  # attention calls served: 0 after a forward means the model bypassed us
        self._additive: dict = {}  # dtype -> the float mask eager attention adds

    @classmethod
    def from_mask(cls, attention_mask: Tensor) -> "Packing":
        real = attention_mask.bool()
        batch, length = real.shape
        flat = real.flatten()
        count = int(flat.sum())
        extra = min(-count % ROW_MULTIPLE, flat.numel() - count)
        if extra:  # the first pads ride along; attention never lets a real token see them
            flat = flat | ((~flat).cumsum(0) <= extra)
        causal = torch.ones(length, length, dtype=torch.bool, device=real.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=real.device)
        return cls(
            rows=flat.nonzero().squeeze(1),
            slot=flat.cumsum(0).view(batch, length) - 1,
            batch=batch,
            length=length,
            mask=(causal & real[:, None, None, :]) | eye,
        )

    def additive_mask(self, dtype: torch.dtype) -> Tensor:
        """0 where attention is allowed, the dtype's minimum elsewhere; built once per forward."""
        if dtype not in self._additive:
            blocked = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device)
            self._additive[dtype] = blocked.masked_fill(~self.mask, torch.finfo(dtype).min)
        return self._additive[dtype]

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, ...) -> (1, N, ...): the real positions, in order."""
        return x.flatten(0, 1).index_select(0, self.rows).unsqueeze(0)

    def pad_heads(self, x: Tensor) -> Tensor:
        """(1, H, N, D) -> (B, H, T, D) with zeros at padding."""
        tokens = x[0].transpose(0, 1)  # (N, H, D)
        full = tokens.new_zeros(self.batch * self.length, *tokens.shape[1:]).index_copy(0, self.rows, tokens)
        return full.view(self.batch, self.length, *tokens.shape[1:]).transpose(1, 2)


def unpadded_attention(module, query, key, value, attention_mask, packing: Packing | None = None, **kwargs):
    """The AttentionInterface entry. With `packing`: packed (1, H, N, D) in, packed (1, N, H, D) out.
    Without (the sampler's cached steps, a batch with no padding): the model's own attention as is."""
    base = module.config._attn_implementation.removeprefix(IMPLEMENTATION + "_")
    base_fn = _base_attention(module, base)
    if packing is None:
        return base_fn(module, query, key, value, attention_mask, **kwargs)
    packing.calls += 1
    mask = packing.mask if base == "sdpa" else packing.additive_mask(query.dtype)
    out, weights = base_fn(
        module, packing.pad_heads(query), packing.pad_heads(key), packing.pad_heads(value), mask, **kwargs
    )  # (B, T, H, D)
    return packing.pack(out), weights


def _base_attention(module, base: str):
    if base == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    # The model's own eager function (GQA, scaling and softcapping as the model defines them).
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise UserError(f"model.remove_padding: {type(module).__name__} has no eager_attention_forward; use sdpa")
    return fn


for _base in BASES:
    AttentionInterface.register(f"{IMPLEMENTATION}_{_base}", unpadded_attention)
    # Packed forwards bring their own 4D mask, which transformers passes through; the sampler's
    # forwards get the base's own mask.
    AttentionMaskInterface.register(f"{IMPLEMENTATION}_{_base}", ALL_MASK_ATTENTION_FUNCTIONS[_base])


def enable(model: PreTrainedModel) -> None:
    """Route `model`'s attention through the packed wrapper for good (after checking it can): a
    packed forward, and the recomputation of one in a checkpointed backward, find it in place."""
    check_supported(model)
    model.config._attn_implementation = f"{IMPLEMENTATION}_{model.config._attn_implementation}"


def uses_packing(model) -> bool:
    return str(getattr(getattr(model, "config", None), "_attn_implementation", "")).startswith(IMPLEMENTATION)


def base_attention(model) -> str:
    """The attention implementation underneath (what a saved config names)."""
    return str(model.config._attn_implementation).removeprefix(IMPLEMENTATION + "_")


def check_supported(model: PreTrainedModel) -> None:
    """A one-line error for a model the wrapper cannot serve exactly; a 2-token forward proves the routing."""
    config = model.config
    base = config._attn_implementation
    if base not in BASES:
        raise UserError(f"model.remove_padding: needs attn_implementation eager or sdpa, {type(model).__name__} has {base}")
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "sliding_window", None) or any(kind != "full_attention" for kind in layer_types):
        raise UserError(f"model.remove_padding: {config.model_type} uses sliding-window attention; set it to false")
    device = next(model.parameters()).device
    ids = torch.zeros(1, 2, dtype=torch.long, device=device)
    config._attn_implementation = f"{IMPLEMENTATION}_{base}"
    try:
        with torch.no_grad(), packed_attention(model, torch.ones_like(ids)) as packing:
            getattr(model, model.base_model_prefix)(
                input_ids=ids, position_ids=torch.arange(2, device=device)[None], attention_mask=packing.mask,
                packing=packing, use_cache=False,
            )
    finally:
        config._attn_implementation = base


@contextmanager
def packed_attention(model: PreTrainedModel, attention_mask: Tensor):
    """The batch's Packing for one packed forward (or a checkpointed backward's recomputation of it).
    The caller passes packing.mask as attention_mask and `packing=` to the forward."""
    packing = Packing.from_mask(attention_mask)
    yield packing
    if packing.calls == 0:  # a ValueError: the CLI prints it as one line, like other bad input
        raise UserError(
            f"model.remove_padding: {type(model).__name__} does not route attention through transformers' "
            "AttentionInterface; set model.remove_padding=false"
        )
