"""What a generation engine is sent after an update, and in what pieces (rlhand/rollout/vllm_engine.py).

The policy's weights go one transformer block at a time (and then what lies outside the blocks),
each tensor gathered whole from its FSDP shards, renamed as the engine's model names it, and cast
to the engine's dtype: the push costs one block's weights at a time, not a second copy of the
model. After the first push only what training changes goes: every trained weight, or with LoRA
merged into the adapted layers (`merged`), or nothing of the base at all when the engine takes the
adapters themselves (`adapters`, vLLM's LoRA support: a small folder written per update). The
output layer always goes with the base weights, also when tied to the input embeddings: vLLM
keeps its own copy of a tied lm_head (../shared/reference/scale-out.md).
"""

import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from rlhand.models.lora import is_lora, merged_state_dict, save_adapter

_BLOCK = re.compile(r"^(.*?\.\d+)\.")  # "model.layers.3.mlp..." -> "model.layers.3"


def block_of(name: str) -> str:
    """The transformer block a state-dict key belongs to ("" for what lies outside the blocks)."""
    found = _BLOCK.match(name)
    return found.group(1) if found else ""


def weight_buckets(
    policy: nn.Module, *, output: tuple[str, nn.Module], dtype: torch.dtype, only: set[str] | None = None, merge_lora: bool = True
) -> Iterator[list[tuple[str, Tensor]]]:
    """(name, tensor) lists, one transformer block per list, then the rest: the policy's weights as
    the engine's model names them (a LoRA model's merged into the adapted layers, or its base alone
    with `merge_lora=False`), in `dtype`; `only` those names. Every rank gets them whole (a
    collective per tensor under FSDP, in the same order on every rank). `output`: the output
    layer's name and module, pushed with the rest even where the state dict names it only as the
    (tied) input embeddings."""
    state = policy.state_dict()
    blocks: dict[str, list[str]] = {}
    for key in state:
        blocks.setdefault(block_of(key.removeprefix("base_model.model.")), []).append(key)
    order = [b for b in blocks if b] + ([""] if "" in blocks else [])
    output_name, output_layer = output
    sent_output = False
    for block in order:
        whole = {key: _whole(state[key]) for key in blocks[block]}
        if is_lora(policy):
            whole = merged_state_dict(policy, whole, merge=merge_lora)
        bucket = [(name, tensor.detach().to(dtype)) for name, tensor in whole.items() if only is None or name in only]
        sent_output = sent_output or any(name == output_name for name, _ in bucket)
        if block == "" and not sent_output and (only is None or output_name in only):
            bucket.append((output_name, _whole(output_layer.weight).detach().to(dtype)))
        if bucket:
            yield bucket


def trained_names(policy: nn.Module, output_name: str) -> set[str]:
    """What training changes, named as the engine's model names it: with LoRA the adapted layers'
    (merged) weights and trained heads; otherwise every trained parameter. Plus the output layer."""
    if is_lora(policy):
        names = set()
        for key in policy.state_dict():
            if ".lora_A." in key:
                names.add(key.split(".lora_A.")[0].removeprefix("base_model.model.") + ".weight")
            elif ".modules_to_save." in key and ".original_module." not in key:
                names.add(key.removeprefix("base_model.model.").replace(".modules_to_save.default.", "."))
    else:
        names = {name for name, p in policy.named_parameters() if p.requires_grad}
    return names | {output_name}


def write_adapter(policy: nn.Module, folder: Path) -> None:
    """The policy's LoRA adapters as PEFT's adapter folder (what vLLM's LoRA support loads): only
    the trained tensors are gathered, a few MB."""
    state = {name: _whole(param) for name, param in policy.named_parameters() if param.requires_grad}
    save_adapter(policy, folder, state)


def _whole(tensor: Tensor) -> Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
