"""Which checkpoint a run resumes from, and whether this run's models can take its weights."""

from pathlib import Path
from typing import Callable

from rlhand.checkpoint.atomic import recover_partial_writes
from rlhand.checkpoint.store import CheckpointError, latest_valid_checkpoint, verify_checkpoint
from rlhand.checkpoint.training import read_config, read_training_state
from rlhand.config.load import flatten
from rlhand.config.schema import RESUME_AUTO

# The settings that decide the trained weights' shapes (and what they mean): a checkpoint written
# with other values cannot be loaded into this run's models.
TINY_MODEL_KEYS = ("model.n_layer", "model.n_embd", "model.n_head", "model.n_positions")
MODEL_KEYS = ("model.source", "model.critic_backbone")


def find_resume_checkpoint(resume: str | None, run_dir: Path, warn: Callable[[str], None]) -> Path | None:
    """resume=auto: the newest valid checkpoint in this run's checkpoints/ (None if there is none);
    resume=PATH: that checkpoint folder, or the newest valid one of that run folder, else an error."""
    if resume is None:
        return None
    if resume == RESUME_AUTO:
        recover_partial_writes(run_dir / "checkpoints")  # a checkpoint write cut short by a kill
        return latest_valid_checkpoint(run_dir / "checkpoints", warn)
    path = Path(resume).expanduser()
    if (path / "checkpoints").is_dir():  # a run folder
        found = latest_valid_checkpoint(path / "checkpoints", warn)
        if found is None:
            raise CheckpointError(f"resume: {path}/checkpoints holds no valid checkpoint")
        return found
    try:
        verify_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"resume: {err}") from None
    return path


def check_same_model(folder: Path, config: dict) -> None:
    """Before any model is built: the checkpoint's model settings equal this run's, or one line
    naming each that differs."""
    saved, current = flatten(read_config(folder)), flatten(config)
    keys = MODEL_KEYS + (TINY_MODEL_KEYS if current.get("model.source") == "tiny" else ())
    differ = [f"{key}={saved.get(key)} (this run: {current.get(key)})" for key in keys if saved.get(key) != current.get(key)]
    if differ:
        raise CheckpointError(
            f"resume: {folder} was written with {', '.join(differ)}; its weights cannot load into this run's models"
        )


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every config value that differs (resume paths aside)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b, name = saved.get(key), current.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_differences(a, b, f"{name}."))
        elif a != b and name != "resume":
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def check_same_layout(folder: Path, world_size: int, replay: bool) -> None:
    """Before any model is built: a checkpoint of N processes resumes on another number of them
    (DCP re-shards the weights), except with replay, whose buffers are each rank's own."""
    written_by = read_training_state(folder)["world_size"]
    if replay and written_by != world_size:
        raise CheckpointError(
            f"resume: {folder} was written by {written_by} processes, each with its own replay buffer; "
            f"resume it with {written_by} processes (this run has {world_size}), or with replay=off"
        )
