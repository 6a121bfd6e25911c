"""resume= keeps the run's own config. Resuming used to continue with the config of the command that
resumed it: a `ppo_v1` run resumed by `rlhand-train resume=auto hydra.run.dir=...` went on as plain
`ppo` with a constant learning rate, 14 "config differs" warnings scrolling past. Now the resumed
run's saved config (its training_config.json) is the base, and the overrides given with resume= apply
on top (extending trainer.max_steps is the common one). A config group (algo=, replay=, ...) cannot
change on resume: its choice set many keys at once that the saved config already holds."""

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rlhand.config.load import ConfigError

GROUPS = ("model", "algo", "replay", "scheduler", "logging", "task", "reward", "estimator", "memory", "features", "experiment", "stage")
NOT_CARRIED = ("resume", "hydra")  # the command's own: where to resume from, Hydra's settings


def saved_config_file(resume: str, run_dir: Path) -> Path:
    """The resumed run's training_config.json: this run folder's (resume=auto), or that of the run
    folder or checkpoint resume= names."""
    if resume == "auto":
        return Path(run_dir) / "training_config.json"
    path = Path(resume).expanduser()
    folder = path if (path / "checkpoints").is_dir() else path.parent.parent
    return folder / "training_config.json"


def resumed_config(saved: dict, overrides: list[str], where: str) -> tuple[DictConfig, list[str]]:
    """(the saved config with `overrides` on top, the overrides applied)."""
    saved = {k: v for k, v in saved.items() if k != "world_size"}  # a fact of the run, not a setting
    applied, dotlist = [], []
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if key.split(".")[0] in NOT_CARRIED:
            continue
        if override.startswith("~") or not sep:
            raise ConfigError(f"resume: {override}: a resumed run keeps its config ({where}); set a key to a value instead")
        if "." not in key and key in GROUPS and key != "stage":
            had = saved.get("algo", {}).get("estimator") if key == "estimator" else saved.get(key, {}).get("name") if isinstance(saved.get(key), dict) else None
            if had is not None and had != value:
                raise ConfigError(f"resume: {override} changes a config group (the run has {key}={had}); a resumed run keeps its own ({where}); start a new run to change it")
            continue  # the run's own choice, repeated (the same command with resume=auto, as a requeued job gives it)
        dotlist.append(f"{key}={value}")
        applied.append(override)
    merged = OmegaConf.merge(OmegaConf.create(saved), OmegaConf.from_dotlist(dotlist))
    return merged, applied


def read_saved(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ConfigError(f"resume: {path}: cannot read the run's config ({err})") from None
