"""What a checkpoint folder holds, writing and reading it without unpickling arbitrary objects.

step_N/policy/         transformers folder (safetensors + config + tokenizer): from_pretrained works
step_N/critic/         the same for the value model (a shared value head: its weight only)
step_N/training_state.pt  optimizers, LR schedule, KL controller, RNG, data position, counters,
                       early stopping, metric history (+ replay buffer): plain tensors and
                       containers, read with torch.load(weights_only=True)
step_N/config.json     the resolved run config
step_N/manifest.json   sizes and SHA-256 of all of the above (store.py)
"""

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from rlhand.checkpoint.store import CheckpointError, prune_checkpoints, write_checkpoint
from rlhand.models.build import Models

STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.json"


def write_models(folder: Path, models: Models, tokenizer: PreTrainedTokenizerBase) -> None:
    hf_logging.disable_progress_bar()
    models.policy.save_pretrained(folder / "policy", safe_serialization=True)
    tokenizer.save_pretrained(folder / "policy")
    models.critic.save(folder / "critic", tokenizer)


def write_training_state(folder: Path, state: dict, config: dict) -> None:
    # Through a Python file: a failed write (a full disk) raises OSError with its errno, where
    # torch.save(path) reports only "unexpected pos" from its C++ writer.
    with open(folder / STATE_FILE, "wb") as handle:
        torch.save(state, handle)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True), encoding="utf-8")


def read_training_state(folder: Path) -> dict:
    try:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable state file is one clear error
        raise CheckpointError(f"{folder}: cannot read {STATE_FILE} ({type(err).__name__}: {err})") from None


def read_config(folder: Path) -> dict:
    return json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))


def load_weights(model: PreTrainedModel, folder: Path) -> None:
    """Load every *.safetensors shard of a save_pretrained folder into `model`, exactly.
    Only keys tied to another loaded tensor (e.g. GPT-2's lm_head = wte) may be absent."""
    shards = sorted(Path(folder).glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{folder}: no .safetensors weights")
    weights = {}
    for shard in shards:
        weights.update(load_file(shard, device="cpu"))
    own = model.state_dict()
    for key, tensor in weights.items():
        if key in own and own[key].shape != tensor.shape:
            raise CheckpointError(
                f"{folder}: {key} has shape {tuple(tensor.shape)} there and {tuple(own[key].shape)} in this run's model "
                "(written for another model configuration)"
            )
    result = model.load_state_dict(weights, strict=False)
    loaded_ptrs = {own[k].data_ptr() for k in weights if k in own}
    untied_missing = [k for k in result.missing_keys if own[k].data_ptr() not in loaded_ptrs]
    if untied_missing or result.unexpected_keys:
        raise CheckpointError(
            f"{folder}: weights do not fit the model (missing {untied_missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )


def capture_rng() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        (np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"], np_state["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


STATE_FORMAT = 2  # 2: learners' optimizer states under "learners", replay rows keep "behaviour_logprobs"


def save_training_checkpoint(root: Path, step: int, models: Models, tokenizer: PreTrainedTokenizerBase, state: dict, config: dict, keep: int) -> Path:
    """checkpoints/step_N: the models' weights and the trainer's state, atomic and with a manifest;
    then all but the newest `keep` are pruned."""

    def write(folder: Path) -> None:
        write_models(folder, models, tokenizer)
        write_training_state(folder, {"format": STATE_FORMAT, **state}, config)

    path = write_checkpoint(root, step, write)
    prune_checkpoints(root, keep, newest=step)
    return path


def load_training_checkpoint(folder: Path, models: Models) -> dict:
    """Load the checkpoint's weights into `models` and return the trainer's state."""
    state = read_training_state(folder)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{folder}: training state format {state.get('format')!r}, this version reads {STATE_FORMAT}")
    load_weights(models.policy, Path(folder) / "policy")
    load_weights(models.critic.module, Path(folder) / "critic")
    return state
