"""Typed config schemas (one dataclass per Hydra group) and the strict loader."""

from rlhand.config.load import ConfigError, load_config, register_configs
from rlhand.config.schema import TrainConfig

__all__ = ["ConfigError", "TrainConfig", "load_config", "register_configs"]
