"""The process a run trains in: its device, thread count, random streams and autocast."""

import random
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch

from rlhand.config.load import ConfigError
from rlhand.config.schema import Autocast, Device, TrainConfig
from rlhand.distributed.context import DistContext


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: Device, ctx: DistContext | None = None) -> torch.device:
    """The run's device; with several ranks on CUDA, this rank's GPU (its LOCAL_RANK)."""
    if device is Device.cuda and not torch.cuda.is_available():
        raise ConfigError("trainer.device: cuda was asked for but torch sees no CUDA device")
    if device is Device.cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return (ctx or DistContext()).cuda_device()


def autocast_context(cfg: TrainConfig, device: torch.device) -> Callable:
    """A zero-argument factory of the forward passes' autocast context (nullcontext when off)."""
    if cfg.trainer.autocast is Autocast.off:
        return nullcontext
    if cfg.trainer.autocast is Autocast.float16 and device.type != "cuda":
        raise ConfigError("trainer.autocast: float16 autocast needs a CUDA device; use bfloat16 on CPU")
    dtype = torch.bfloat16 if cfg.trainer.autocast is Autocast.bfloat16 else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
