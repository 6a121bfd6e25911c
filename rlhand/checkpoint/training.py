"""A training checkpoint, checkpoints/step_N/, on one process or many:

weights/             torch.distributed.checkpoint (DCP): every learner's model and optimizer state,
                     each rank writing its own shards. DCP re-shards on load, so a checkpoint
                     written by N processes loads into any number.
training_state.pt    the trainer's global state (step, counters, metric history, LR schedule, KL
                     controller, prompt sampler, early stopping), written by rank 0
rank_<r>.pt          what each rank holds alone: its RNG streams and, with replay, its buffer
config.json          the resolved run config (with the world size it ran with)
manifest.json        sizes and SHA-256 of all of the above, written last (store.py)

State files are plain tensors and containers, read with torch.load(weights_only=True): a
checkpoint cannot run code when it is loaded. Final and best models are transformers folders
(rlhand/models/folders.py), not this format.
"""

import json
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from rlhand.checkpoint.store import CheckpointError, prune_checkpoints, write_checkpoint
from rlhand.distributed.context import DistContext
from rlhand.errors import wrapped_interrupt

STATE_FORMAT = 3  # 3: weights through DCP, rank-local state in rank_<r>.pt
WEIGHTS_DIR = "weights"
STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.json"


def rank_file(rank: int) -> str:
    return f"rank_{rank}.pt"


def save_training_checkpoint(
    root: Path, step: int, ctx: DistContext, learners: dict, state: dict, rank_state: dict, config: dict, keep: int
) -> Path:
    """checkpoints/step_N, written by every rank, published atomically with its manifest; then all
    but the newest `keep` are pruned. `learners`: name -> Learner (its module and optimizer)."""

    def write(folder: Path) -> None:
        weights = {name: _learner_state(learner) for name, learner in learners.items()}
        with warnings.catch_warnings():  # one process: DCP says it saves without a process group
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            dcp.save(weights, checkpoint_id=str(folder / WEIGHTS_DIR))
        _save_plain(rank_state, folder / rank_file(ctx.rank))
        if ctx.is_main:
            _save_plain({"format": STATE_FORMAT, "world_size": ctx.world_size, **state}, folder / STATE_FILE)
            (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True), encoding="utf-8")

    path = write_checkpoint(root, step, write, ctx)
    if ctx.is_main:
        prune_checkpoints(root, keep, newest=step)
    return path


def read_training_state(folder: Path) -> dict:
    """The trainer's global state, after checking that this version can read it."""
    state = _load_plain(Path(folder) / STATE_FILE)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{folder}: training state format {state.get('format')!r}, this version reads {STATE_FORMAT}")
    return state


def read_rank_state(folder: Path, rank: int) -> dict:
    return _load_plain(Path(folder) / rank_file(rank))


def load_learners(folder: Path, learners: dict) -> None:
    """Every learner's model and optimizer state from weights/ (re-sharded to this run's layout)."""
    weights = {name: _learner_state(learner) for name, learner in learners.items()}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            dcp.load(weights, checkpoint_id=str(Path(folder) / WEIGHTS_DIR))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: BLE001 - DCP wraps a rank's error in a CheckpointException (a BaseException)
        interrupt = wrapped_interrupt(err)
        if interrupt is not None:
            raise interrupt from None
        # Its message is each failing rank's traceback; the last line is the error itself.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise CheckpointError(f"{folder}: its weights do not load into this run's models ({(lines or [type(err).__name__])[-1][:300]})") from None
    for name, learner in learners.items():
        set_state_dict(
            learner.module, learner.optimizer, model_state_dict=weights[name]["model"], optim_state_dict=weights[name]["optim"], options=TRAINED
        )


def read_config(folder: Path) -> dict:
    return json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))


# Only what the learner trains: with LoRA the adapters (and a trained head), never the frozen base,
# which comes back from the model's own folder.
TRAINED = StateDictOptions(ignore_frozen_params=True, strict=False)


def _learner_state(learner) -> dict:
    model, optim = get_state_dict(learner.module, learner.optimizer, options=TRAINED)
    # ignore_frozen_params keeps a frozen weight that another name ties (GPT-2's lm_head = wte): keep
    # exactly the parameters that train.
    trained = {name for name, param in learner.module.named_parameters() if param.requires_grad}
    return {"model": {k: v for k, v in model.items() if k in trained}, "optim": optim}


def _save_plain(state: dict, path: Path) -> None:
    # Through a Python file: a failed write (a full disk) raises OSError with its errno, where
    # torch.save(path) reports only "unexpected pos" from its C++ writer.
    with open(path, "wb") as handle:
        torch.save(state, handle)


def _load_plain(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable state file is one clear error
        raise CheckpointError(f"{path.parent}: cannot read {path.name} ({type(err).__name__}: {err})") from None
