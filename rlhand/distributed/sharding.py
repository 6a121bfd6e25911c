"""How models are laid out over ranks (trainer.strategy) and what that asks of the code around them.

- fsdp (the default with several ranks): FSDP2's fully_shard on every transformer block, on a
  *ForSequenceClassification model's backbone (the critic and reward model read it directly), and
  on the model itself. Parameters, gradients and optimizer states are sharded over the ranks;
  each forward all-gathers a block's parameters and frees them after. Gradients are summed, not
  averaged, over ranks: every loss is already normalised by the global token or sequence count.
- ddp: every rank holds the whole model; the learner sums gradients over ranks before its step.

The frozen reference and reward model are replicated (trainer.frozen_models=replicate, every rank
its own copy, no communication) or sharded like the trained ones (shard: less memory, an
all-gather per forward).

Generation runs one token at a time, and ranks finish their responses at different steps: a
sharded model would need an all-gather per token, in lock step. `gathered` keeps the sampling
models' parameters gathered for the whole rollout instead, so each rank samples on its own.
"""

import warnings
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedModel

from rlhand.distributed.context import DistContext

# A separately sharded backbone returns its hidden states as a view; rlhand never writes into them
# in place (hidden states are only indexed), which is what the warning is about.
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")


def fsdp_modules(module: nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


def shard_model(
    module: nn.Module, ctx: DistContext, device: torch.device, param_dtype: torch.dtype | None = None, offload: bool = False
) -> None:
    """fully_shard `module` in place (blocks first, then the backbone of a sequence classifier, then
    the whole); gradients reduce as sums. `param_dtype`: FSDP2 mixed precision (computing in that
    dtype, keeping fp32 sharded weights and optimizer state, reducing gradients in fp32).
    `offload`: the shards (and so the optimizer's states) live in CPU memory between uses."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (ctx.world_size,))
    kwargs = {"mesh": mesh}
    if param_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    if offload:  # pinned memory only where there is a GPU to copy to (pinning fails on a CPU-only build)
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    base = module.get_base_model() if hasattr(module, "get_base_model") else module  # inside a LoRA (PEFT) wrapper
    block_names = set(getattr(base, "_no_split_modules", None) or [])
    for child in base.modules():
        if child is not base and type(child).__name__ in block_names:
            fully_shard(child, **kwargs)
    if isinstance(base, PreTrainedModel) and base.get_output_embeddings() is None:
        # A sequence classifier: its backbone and score head are called one by one (hidden states
        # at chosen positions, then the head), so each gathers its own parameters. A causal LM is
        # only ever called whole, and its output layer may be tied to the input embeddings.
        for child in base.children():
            if any(True for _ in child.parameters()):
                fully_shard(child, **kwargs)
    fully_shard(module, **kwargs)
    for sharded in fsdp_modules(module):
        sharded.set_gradient_divide_factor(1.0)  # sums (losses carry the global normalisation)
        sharded.set_force_sum_reduction_for_comms(True)  # plain SUM collectives: gloo has no pre-multiplied sum
    if not any(p.requires_grad for p in module.parameters()):
        # A frozen model has no backward to reshard its root after: without this its embeddings
        # (and output layer) would stay gathered from its first forward on.
        module.set_reshard_after_forward(True, recurse=False)


@contextmanager
def gathered(modules: list[nn.Module]):
    """Keep the FSDP-sharded `modules` gathered (whole on every rank) inside the block; a no-op for
    modules that are not sharded. Used around generation, where each rank samples on its own.

    After it each module reshards after forward as FSDP2 has it for training: every block does,
    the root (the top module: embeddings, final norm and a tied output layer) does not, since its
    parameters would be gathered again at once for the backward."""
    sharded = [(m, m is module) for module in modules for m in fsdp_modules(module)]
    for m, _ in sharded:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m, is_root in sharded:
            m.reshard()
            m.set_reshard_after_forward(not is_root, recurse=False)


def reshards_after_forward(module: nn.Module) -> bool:
    """Whether an FSDP2 module frees its gathered parameters after each forward (FSDP2 keeps this in
    its parameter groups and has no getter for it)."""
    groups = module._get_fsdp_state()._fsdp_param_groups
    return any(group.post_forward_mesh_info is not None for group in groups)


def full_state_dict(module: nn.Module, ctx: DistContext) -> dict | None:
    """The whole state dict on rank 0 (on CPU), None on the other ranks; a collective under FSDP."""
    if not fsdp_modules(module):
        return module.state_dict() if ctx.is_main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if ctx.is_main else None
