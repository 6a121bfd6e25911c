"""What is done to a model's weights and modules once it is loaded: dtypes by role, dropout off,
activation checkpointing, and a CPU workaround on the output layer."""

import torch
from torch import nn
from transformers import PreTrainedModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def frozen_dtype(model_cfg) -> torch.dtype:
    """What frozen weights are kept in: model.frozen_dtype, else model.dtype (a reference, a reward
    model, a LoRA base, any scorer's reward model)."""
    return DTYPES[(model_cfg.frozen_dtype or model_cfg.dtype).value]


def cast_by_role(model: nn.Module, *, trained: torch.dtype, frozen: torch.dtype) -> None:
    """Every parameter that trains in `trained`, every other in `frozen` (a tied weight once: it is
    one parameter). A model=hf base is loaded in its dtype already; this catches what PEFT adds."""
    for param in model.parameters():
        if not param.is_floating_point():
            continue  # a quantized weight (models/quantize.py) keeps its own storage
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
