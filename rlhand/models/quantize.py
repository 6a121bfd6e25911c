"""Frozen weights in 4 or 8 bits through bitsandbytes (model.quantization: the trained models' frozen
bases under LoRA, QLoRA; model.frozen_quantization: a reference copy and the reward model).

The linear layers inside the transformer blocks become bitsandbytes' Linear4bit (NF4 with double
quantization, QLoRA's format: blocks of 64, their scales quantized again) or Linear8bitLt (LLM.int8,
outlier threshold 6); embeddings, norms, the output layer and score or value heads keep the frozen
dtype, as transformers' own bitsandbytes integration leaves them. bitsandbytes quantizes a weight
when it moves to its device, so the swap happens on the CPU copy that was just read and prepare()
quantizes it. One path for the built-in tiny model (built in memory) and model=hf folders; the
cost is that a model=hf model is read whole in its frozen dtype first, as it is without quantization.

GPT-2's Conv1D layers keep weights as [in, out]; their quantized replacements are plain [out, in]
linear layers, named in the model's `rlhand_transposed` so an exported model is written back in
GPT-2's own layout (saved_layout)."""

import warnings

import torch
from torch import Tensor, nn

from rlhand.errors import UserError

# LLM.int8 on a CPU computes in fp16 and says so at every matmul of an fp32 or bf16 input.
warnings.filterwarnings("ignore", message=r"MatMul8bitLt: inputs will be cast from")

KINDS = ("nf4", "int8")
BLOCK_SIZE = 64  # QLoRA's NF4 block
INT8_THRESHOLD = 6.0  # LLM.int8's outlier threshold (transformers' default for load_in_8bit)
TRANSPOSED = "rlhand_transposed"  # names of former Conv1D layers, kept on the quantized model


def check_library(kind: str, field: str) -> None:
    """Before any model loads: bitsandbytes is importable, or one line naming the key."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import bitsandbytes  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any failure to import means it cannot quantize here
        raise UserError(f"{field}: {kind} needs bitsandbytes (pip install 'rlhand[quantization]'); importing it failed: {err}") from None


def check_quantization_library(model_cfg) -> None:
    """model.quantization and model.frozen_quantization, before any model loads."""
    for field in ("quantization", "frozen_quantization"):
        kind = getattr(model_cfg, field).value
        if kind != "none":
            check_library(kind, f"model.{field}")


def block_linears(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every linear layer inside a transformer block (the model's _no_split_modules
    classes): what is quantized."""
    from transformers.pytorch_utils import Conv1D

    block_types = set(getattr(model, "_no_split_modules", None) or [])
    found = []
    for name, module in model.named_modules():
        if type(module).__name__ in block_types:
            found += [(f"{name}.{child_name}", child) for child_name, child in module.named_modules() if isinstance(child, (nn.Linear, Conv1D))]
    return found


def quantize(model: nn.Module, kind: str, compute_dtype: torch.dtype, field: str) -> int:
    """Swap `model`'s block linears for bitsandbytes layers holding their weights (quantized when
    the model moves to its device); the number of parameters swapped. Frozen: nothing here trains."""
    import bitsandbytes as bnb
    from transformers.pytorch_utils import Conv1D

    linears = block_linears(model)
    if not linears:
        raise UserError(f"{field}: {kind}: {type(model).__name__} has no linear layers in transformer blocks that bitsandbytes can quantize")
    transposed, count = set(), 0
    for name, old in linears:
        weight = old.weight.data.T if isinstance(old, Conv1D) else old.weight.data
        out_features, in_features = weight.shape
        bias = old.bias is not None
        if kind == "nf4":
            new = bnb.nn.Linear4bit(in_features, out_features, bias=bias, compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=True)
            new.weight = bnb.nn.Params4bit(weight.contiguous(), requires_grad=False, quant_type="nf4", blocksize=BLOCK_SIZE, compress_statistics=True)
            # On an AVX512-BF16 CPU, bitsandbytes 0.50 repacks a weight for inference at the first
            # eval-mode forward without gradients (every rollout: rlhand keeps models in eval mode),
            # and that packed path then fails in the update's backward (an in-place bias add).
            new.support_avx512bf16_for_cpu = False
        else:
            new = bnb.nn.Linear8bitLt(in_features, out_features, bias=bias, has_fp16_weights=False, threshold=INT8_THRESHOLD)
            new.weight = bnb.nn.Int8Params(weight.contiguous(), requires_grad=False, has_fp16_weights=False)
        if bias:
            new.bias = nn.Parameter(old.bias.data, requires_grad=False)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, new)
        if isinstance(old, Conv1D):
            transposed.add(name)
        count += weight.numel()
    setattr(model, TRANSPOSED, frozenset(transposed))
    _own_storage(model)
    return count


def _own_storage(model: nn.Module) -> None:
    """The weights left unquantized (embeddings, norms, heads) copied out of the safetensors file
    from_pretrained may have mapped them from: while one of them views the mapping, every page of the
    file read to quantize the others stays resident (0.5B, NF4: 1.26 GiB RSS for 0.42 GiB of weights;
    0.85 after this copy)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            tensor.data = tensor.data.clone()


def is_quantized(module: nn.Module) -> bool:
    return any(_is_bnb(m) for m in module.modules())


def dequantized_state(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` (model.state_dict() of `model`, PEFT-wrapped or not) with each quantized weight
    dequantized (float32, [out, in]) under its own key, and bitsandbytes' own keys (NF4's scales and
    maps under weight.*, LLM.int8's SCB and weight_format) dropped: what LoRA merging and saving read."""
    out = dict(state)
    for name, module in model.named_modules():
        if not _is_bnb(module):
            continue
        for key in [k for k in out if k.startswith(f"{name}.") and k not in (f"{name}.weight", f"{name}.bias")]:
            del out[key]
        out[f"{name}.weight"] = dequantize(module).float().cpu()
    return out


def dequantize(module: nn.Module) -> Tensor:
    import bitsandbytes.functional as F

    weight = module.weight
    if type(weight).__name__ == "Params4bit":
        return F.dequantize_4bit(weight.data, weight.quant_state)
    # LLM.int8's row scales move from the weight to the layer's state at its first forward.
    scales = weight.SCB if getattr(weight, "SCB", None) is not None else module.state.SCB
    return F.int8_vectorwise_dequant(weight.data, scales)


def saved_layout(base_model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights of former Conv1D layers back in GPT-2's [in, out] layout (keys as the base model names them)."""
    transposed = getattr(base_model, TRANSPOSED, frozenset())
    return {k: (v.T.contiguous() if k.removesuffix(".weight") in transposed and k.endswith(".weight") else v) for k, v in state.items()}


def quantized_bytes(params: int, kind: str) -> float:
    """Bytes of `params` quantized weights with their scales: NF4 half a byte each plus double-
    quantized block scales (an 8-bit scale per 64, an fp32 one per 256 of those); int8 a byte each
    (the fp32 row scales are counted per row by the caller's shape, negligible here)."""
    if kind == "nf4":
        return params * (0.5 + 1 / BLOCK_SIZE + 4 / (BLOCK_SIZE * 256))
    return float(params)


def _is_bnb(module: nn.Module) -> bool:
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")
