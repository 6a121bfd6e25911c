"""Register the schemas with Hydra and turn a composed DictConfig into checked dataclasses."""

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlhand.config import schema
from rlhand.errors import UserError


class ConfigError(UserError):
    """A bad config value; the message is one line naming the field."""


GROUP_SCHEMAS = {
    "model": schema.ModelConfig,
    "algo": schema.AlgoConfig,
    "replay": schema.ReplayConfig,
    "scheduler": schema.SchedulerConfig,
    "logging": schema.LoggingConfig,
    "task": schema.TaskConfig,
    "reward": schema.RewardConfig,
}


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="train_schema", node=schema.TrainConfig)
    for group, node in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"{group}_schema", node=node)


def load_config(cfg: DictConfig) -> schema.TrainConfig:
    """Strictly re-merge onto the schema (this also rejects `+group.typo=1`, which Hydra lets
    through), then build the dataclasses, which runs every `__post_init__` check."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
        container.pop("hydra", None)
        merged = OmegaConf.merge(OmegaConf.structured(schema.TrainConfig), container)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err)) from None
    except ValueError as err:
        raise ConfigError(_one_line(err)) from None


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    # OmegaConf appends "full_key: ..., object_type=..." lines; keep the message and the key.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    key = next((line for line in lines if line.startswith("full_key:")), None)
    head = lines[0] if lines else type(err).__name__
    return f"{head} ({key})" if key and key not in head else head


def config_dict(cfg: schema.TrainConfig) -> dict:
    """The resolved config as plain JSON-able values (Enums as their names)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"algo": {"lr": 1e-3}} -> {"algo.lr": 1e-3}: a resolved config as dotted keys."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
