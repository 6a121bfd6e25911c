"""Models in transformers' format: final/ and best/ folders that from_pretrained loads (with LoRA the
merged model and PEFT's adapter folder), and safetensors weights read back exactly."""

import json
from pathlib import Path

from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from rlhand.errors import ModelLoadError
from rlhand.models.lora import is_lora, merged_state_dict, save_adapter
from rlhand.models.quantize import dequantized_state, is_quantized, saved_layout


def save_trained_model(model: nn.Module, folder: Path, state_dict: dict, tokenizer: PreTrainedTokenizerBase | None) -> None:
    """A trained model as a transformers folder; with LoRA the merged model there, and the adapters
    as PEFT saves them in <folder>_adapter."""
    if is_lora(model):
        save_adapter(model, Path(f"{folder}_adapter"), state_dict)
        if is_quantized(model):  # a QLoRA base: dequantized, merged in the adapters' dtype, in the model's own layout
            merged = saved_layout(model.get_base_model(), merged_state_dict(model, dequantized_state(model, state_dict)))
        else:
            merged = merged_state_dict(model, state_dict)
        save_pretrained_folder(model.get_base_model(), folder, merged, tokenizer)
    else:
        save_pretrained_folder(model, folder, state_dict, tokenizer)


def save_pretrained_folder(model: nn.Module, folder: Path, state_dict: dict, tokenizer: PreTrainedTokenizerBase | None) -> None:
    """`model` with the weights `state_dict` (whole, e.g. gathered from FSDP shards) as a
    save_pretrained folder; the tokenizer beside it when given."""
    hf_logging.disable_progress_bar()
    # The weights' own dtype (a LoRA model merged in the adapters' dtype on a base kept in another),
    # read first: save_pretrained empties the dict it is given.
    saved = next((t.dtype for t in state_dict.values() if t.is_floating_point()), None)
    model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
    if isinstance(model, PreTrainedModel):
        # FSDP2 swaps a model's class for a subclass named FSDP<Name>; the folder names the model's own.
        base = next(cls for cls in type(model).__mro__ if not cls.__name__.startswith("FSDP"))
        config_file = Path(folder) / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["architectures"] = [base.__name__]
        if saved is not None and "dtype" in config:
            config["dtype"] = str(saved).removeprefix("torch.")
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load every *.safetensors shard of a save_pretrained folder into `model`, exactly.
    Only keys tied to another loaded tensor (e.g. GPT-2's lm_head = wte) may be absent."""
    shards = sorted(Path(folder).glob("*.safetensors"))
    if not shards:
        raise ModelLoadError(f"{folder}: no .safetensors weights")
    weights = {}
    for shard in shards:
        weights.update(load_file(shard, device="cpu"))
    own = model.state_dict()
    for key, tensor in weights.items():
        if key in own and own[key].shape != tensor.shape:
            raise ModelLoadError(
                f"{folder}: {key} has shape {tuple(tensor.shape)} there and {tuple(own[key].shape)} in this run's model "
                "(written for another model configuration)"
            )
    result = model.load_state_dict(weights, strict=False)
    loaded_ptrs = {own[k].data_ptr() for k in weights if k in own}
    untied_missing = [k for k in result.missing_keys if own[k].data_ptr() not in loaded_ptrs]
    if untied_missing or result.unexpected_keys:
        raise ModelLoadError(
            f"{folder}: weights do not fit the model (missing {untied_missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
