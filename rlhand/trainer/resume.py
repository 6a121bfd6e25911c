"""Checkpoint a Trainer's full state and bring it back exactly (the same run, bit for bit, on CPU)."""

from pathlib import Path
from typing import Callable

from rlhand.checkpoint.atomic import recover_partial_writes
from rlhand.checkpoint.state import (
    capture_rng,
    load_weights,
    read_config,
    read_training_state,
    restore_rng,
    write_models,
    write_training_state,
)
from rlhand.checkpoint.store import (
    CheckpointError,
    latest_valid_checkpoint,
    prune_checkpoints,
    verify_checkpoint,
    write_checkpoint,
)
from rlhand.config.load import flatten

STATE_FORMAT = 1


def find_resume_checkpoint(resume: str | None, run_dir: Path, warn: Callable[[str], None]) -> Path | None:
    """resume=auto: the newest valid checkpoint in this run's checkpoints/ (None if there is none);
    resume=PATH: that checkpoint folder, or the newest valid one of that run folder, else an error."""
    if resume is None:
        return None
    if resume == "auto":
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


# The settings that decide the trained weights' shapes (and what they mean): a checkpoint written
# with other values cannot be loaded into this run's models.
TINY_MODEL_KEYS = ("model.n_layer", "model.n_embd", "model.n_head", "model.n_positions")
MODEL_KEYS = ("model.source", "model.critic_backbone")


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


def save_trainer_checkpoint(trainer, config: dict) -> Path:
    root = trainer.run_dir / "checkpoints"

    def write(folder: Path) -> None:
        write_models(folder, trainer.models, trainer.inputs.tokenizer)
        write_training_state(folder, trainer_state(trainer), config)

    path = write_checkpoint(root, trainer.step, write)
    prune_checkpoints(root, trainer.cfg.checkpoint.keep, newest=trainer.step)
    return path


def trainer_state(trainer) -> dict:
    return {
        "format": STATE_FORMAT,
        "step": trainer.step,
        "stopped_early": trainer.stopped_early,
        "optimizers": {"policy": trainer.optimizers.policy.state_dict(), "critic": trainer.optimizers.critic.state_dict()},
        "lr_schedule": trainer.lr_schedule.state_dict(),
        "kl_controller": trainer.kl_ctl.state_dict(),
        "sampler": trainer.sampler.state_dict(),
        "totals": dict(trainer.totals),
        "early_stopping": trainer.early_stopping.state_dict(),
        "history": trainer.history,
        "replay": trainer.replay.buffer.state_dict() if trainer.replay is not None else None,
        "rng": capture_rng(),
    }


def restore_trainer(trainer, folder: Path) -> list[str]:
    """Load `folder` into a freshly built trainer; returns the config keys that differ from the checkpoint's."""
    state = read_training_state(folder)
    if state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{folder}: training state format {state.get('format')!r}, this version reads {STATE_FORMAT}")
    load_weights(trainer.models.policy, folder / "policy")
    load_weights(trainer.models.critic, folder / "critic")
    trainer.optimizers.policy.load_state_dict(state["optimizers"]["policy"])
    trainer.optimizers.critic.load_state_dict(state["optimizers"]["critic"])
    trainer.lr_schedule.load_state_dict(state["lr_schedule"])
    trainer.kl_ctl.load_state_dict(state["kl_controller"])
    trainer.sampler.load_state_dict(state["sampler"])
    trainer.totals = dict(state["totals"])
    trainer.early_stopping.load_state_dict(state["early_stopping"])
    trainer.history = list(state["history"])
    if trainer.replay is not None:
        if state["replay"] is None:
            raise CheckpointError(f"{folder}: has no replay buffer, but replay is on (replay={trainer.cfg.replay.name})")
        trainer.replay.buffer.load_state_dict(state["replay"])
    trainer.step = state["step"]
    trainer.stopped_early = state["stopped_early"]
    restore_rng(state["rng"])  # last: building the trainer drew from the same generators
    return _config_differences(read_config(folder), trainer.config)


def _config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b, name = saved.get(key), current.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_config_differences(a, b, f"{name}."))
        elif a != b and name != "resume":
            out.append(f"{name}: {a!r} -> {b!r}")
    return out
