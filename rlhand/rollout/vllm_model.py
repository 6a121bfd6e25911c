"""What vLLM is told about the policy, and what rlhand checks of it before an engine starts: the
process environment vLLM reads at import, the config file it builds the model from, the CPU
kernels' head sizes, the KV cache a generation call needs, whether it takes LoRA adapters for the
architecture. The engine itself is rlhand/rollout/vllm_engine.py."""

import json
import os
from pathlib import Path

import torch
from torch import nn

from rlhand.errors import UserError

# In-process engine core (no subprocess: 3-5 s to start instead of 25-55 s, and the weight push is a
# function call). The push sends a function to the worker, which vLLM only serialises when allowed.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
# vLLM's INFO lines (and warnings about features rlhand does not use) would drown the run's log.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

# The ranks vLLM's LoRA support is built for (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def supports_lora(model: nn.Module) -> bool:
    """Whether vLLM's own implementation of this architecture takes LoRA adapters (Qwen2, Llama, ...
    do; GPT-2 does not)."""
    try:
        from vllm.model_executor.models import ModelRegistry
        from vllm.model_executor.models.interfaces import supports_lora as vllm_supports_lora

        base = next(cls for cls in type(model).__mro__ if not cls.__name__.startswith("FSDP"))
        cls = ModelRegistry._try_load_model_cls(base.__name__)
        return cls is not None and vllm_supports_lora(cls)
    except Exception:  # noqa: BLE001 - a vLLM without this registry: merged layers, which every model takes
        return False


def check_head_size(config, device: torch.device) -> None:
    """vLLM's CPU attention kernels take a fixed set of head sizes; say so before the engine fails
    inside its first forward."""
    if device.type != "cpu":
        return
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head not in supported:
        raise UserError(
            f"generation.engine=vllm: the policy's attention head size is {head} (hidden size / heads), and vLLM's CPU kernels "
            f"take only {supported}; for the built-in tiny model set e.g. model.n_embd=64 model.n_head=2"
        )


def cpu_kv_cache_bytes(config, rows: int, max_len: int, dtype: str) -> int:
    """Room for every row of one generation call at its longest (rlhand/models/fit.py's
    kv_cache_bytes: what the memory estimate counts). VLLM_CPU_KVCACHE_SPACE (GiB) overrides it."""
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return int(float(os.environ["VLLM_CPU_KVCACHE_SPACE"]) * 2**30)
    from rlhand.models.fit import kv_cache_bytes

    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    width = 2 if dtype in ("bfloat16", "float16") else 4
    return kv_cache_bytes(config.num_hidden_layers, kv_heads * head, rows, max_len, width)


def write_engine_config(model: nn.Module, folder: str) -> None:
    """The model's config.json, as vLLM reads it to build the model. Written directly: transformers'
    save_pretrained writes nothing on ranks other than 0, and every rank has its own engine."""
    config = model.config.to_dict()
    base = next(cls for cls in type(model).__mro__ if not cls.__name__.startswith("FSDP"))  # FSDP2 renames the class
    config["architectures"] = [base.__name__]
    Path(folder, "config.json").write_text(json.dumps(config, indent=1, default=str), encoding="utf-8")


def output_layer_name(model: nn.Module) -> str:
    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is output:
            return f"{name}.weight"
    raise UserError("generation.engine=vllm: the policy has no output layer to push")
