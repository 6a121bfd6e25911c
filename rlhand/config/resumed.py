"""resume= keeps the run's own config. Resuming used to continue with the config of the command that
resumed it: a `ppo_v1` run resumed by `rlhand-train resume=auto hydra.run.dir=...` went on as plain
`ppo` with a constant learning rate, 14 "config differs" warnings scrolling past. Now the resumed
run's saved config (its training_config.json) is the base, and the overrides given with resume= apply
on top (extending trainer.max_steps is the common one); those that change something are said in one
line. A config group named again as the run had it changes nothing; another option of it (replay=off)
replaces that group's settings."""

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


def resumed_config(saved: dict, overrides: list[str], where: str, current: dict | None = None) -> tuple[DictConfig, list[str]]:
    """(the saved config with `overrides` on top, the overrides that changed something). A group
    override that names another option (replay=off on a run with replay) takes that group's node
    from `current`, this command's composed config; the estimator, which sets keys of several
    groups, cannot change."""
    base = OmegaConf.create({k: v for k, v in saved.items() if k != "world_size"})  # world_size: a fact of the run
    applied, dotlist = [], []
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if key.split(".")[0] in NOT_CARRIED:
            continue
        if override.startswith("~") or not sep:
            raise ConfigError(f"resume: {override}: a resumed run keeps its config ({where}); set a key to a value instead")
        if "." not in key and key in GROUPS and key != "stage":
            had = OmegaConf.select(base, "algo.estimator" if key == "estimator" else f"{key}.name")
            if had is None or had == value:
                continue  # the run's own choice repeated (the same command with resume=auto, as a requeued job sends it)
            if key == "estimator" or current is None or key not in current:
                raise ConfigError(f"resume: {override} changes a config group (the run has {key}={had}); a resumed run keeps its own ({where}); start a new run to change it")
            base[key] = current[key]
            applied.append(override)
            continue
        parsed = OmegaConf.from_dotlist([f"{key}={value}"])
        if OmegaConf.select(base, key) != OmegaConf.select(parsed, key):
            applied.append(override)
        dotlist.append(f"{key}={value}")
    return OmegaConf.merge(base, OmegaConf.from_dotlist(dotlist)), applied


def read_saved(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ConfigError(f"resume: {path}: cannot read the run's config ({err})") from None
