"""LoRA adapters through PEFT (model.lora): the trained models keep their base weights frozen and
learn low-rank updates; the reference is the policy's own base with its adapters switched off, so
it costs no second copy (PEFT's disable_adapter gives the base model's logits exactly).

Saving: the adapters as PEFT writes them (an adapter folder: adapter_config.json +
adapter_model.safetensors), and the merged model (base + scaled B A) as a transformers folder that
AutoModel*.from_pretrained loads without PEFT. Both come from a whole state dict (gathered from FSDP
shards where there are some), so merging never touches the live model.
"""

import copy
import warnings
from pathlib import Path

from torch import Tensor, nn

from rlhand.config.schema import LoraSettings
from rlhand.models.quantize import TRANSPOSED

ADAPTER = "default"


def add_lora(model: nn.Module, settings: LoraSettings, task: str) -> nn.Module:
    """`model` with LoRA adapters (task: CAUSAL_LM or SEQ_CLS, whose score head trains whole); only
    adapter (and head) weights require grad."""
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules or "all-linear"
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=0.0,  # every dropout is off (LoraSettings.dropout says why)
        target_modules=list(targets) if not isinstance(targets, str) else targets,
        task_type=task,
        # GPT-2's Conv1D stores W transposed (its quantized replacements do not: models/quantize.py).
        fan_in_fan_out=any(type(m).__name__ == "Conv1D" for m in model.modules()),
    )
    with warnings.catch_warnings():  # PEFT 0.21 reads transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".is_gradient_checkpointing. is deprecated", category=FutureWarning)
        return get_peft_model(model, config)


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def merged_state_dict(model: nn.Module, state: dict[str, Tensor], merge: bool = True) -> dict[str, Tensor]:
    """The base model's state dict with every LoRA update merged in (W + scaling * B A), from a
    whole state dict of the PEFT model `state`; keys as the base model names them. Every tensor in
    the adapters' dtype (model.dtype), also where the base is kept in another (frozen_dtype).
    `merge` False: the base's own weights, the adapters left out (an engine that applies them itself)."""
    config = model.peft_config[ADAPTER]
    scaling = config.lora_alpha / config.r
    prefix = "base_model.model."
    dtype = next((t.dtype for k, t in state.items() if ".lora_A." in k), None)
    merged = {}
    for key, tensor in state.items():
        if ".lora_" in key or ".original_module." in key:
            continue  # adapters are merged below; original_module is a trained head's copy from before training
        name = key.removeprefix(prefix).replace(".base_layer.", ".").replace(f".modules_to_save.{ADAPTER}.", ".")
        lora_a = state.get(key.replace(".base_layer.weight", f".lora_A.{ADAPTER}.weight"))
        if merge and key.endswith(".base_layer.weight") and lora_a is not None:
            lora_b = state[key.replace(".base_layer.weight", f".lora_B.{ADAPTER}.weight")]
            delta = (lora_b.float() @ lora_a.float()) * scaling
            if config.fan_in_fan_out:
                delta = delta.T
            tensor = tensor.float() + delta
        merged[name] = tensor if dtype is None or not tensor.is_floating_point() else tensor.to(dtype)
    return merged


def save_adapter(model: nn.Module, folder: Path, state: dict[str, Tensor]) -> None:
    """The adapter folder PEFT's PeftModel.from_pretrained(base, folder) loads."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = get_peft_model_state_dict(model, state_dict=state, adapter_name=ADAPTER)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, folder / "adapter_model.safetensors")
    config = copy.copy(model.peft_config[ADAPTER])
    if getattr(model.get_base_model(), TRANSPOSED, None):
        config.fan_in_fan_out = True  # a quantized GPT-2 trained on [out, in] layers; its plain model has Conv1D
    config.save_pretrained(str(folder))


def check_targets(settings: LoraSettings, config) -> None:
    """Before any model loads: every name in model.lora.target_modules names a module of the policy
    (as PEFT matches them: the whole name or its last parts), or one line listing the linear layers
    it has. `config`: the policy's transformers config (the model is built on the meta device)."""
    if not settings.enabled or not settings.target_modules:
        return
    import torch
    from transformers import AutoModelForCausalLM

    from rlhand.errors import UserError

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config)
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in settings.target_modules if not any(name == t or name.endswith("." + t) for name in names)]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _is_linear(module)})
        raise UserError(
            f"model.lora.target_modules: {type(model).__name__} has no module named {', '.join(map(repr, missing))}; "
            f"its linear layers are named {', '.join(linear)}"
        )


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's linear layers are Conv1D
