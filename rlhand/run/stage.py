"""What a stage supplies to a run (rlhand/run/lifecycle.py): its inputs and checks before any model
loads, its learners, its step, its validation, its state and its saved models. The run does the
rest: the folder, the config record, logging, checkpoints and resume, validation cadence, early
stopping, the best and final models, the LR schedule, faults. Stages live in rlhand/stages/."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from rlhand.config.schema import TrainConfig
from rlhand.distributed.context import DistContext
from rlhand.distributed.layout import Layout
from rlhand.reporting.timer import PhaseTimer
from rlhand.run.learners import Learners


@dataclass
class RunEnv:
    """Where a stage runs: its process (and the job's other ranks), device, layout, autocast, timer."""

    ctx: DistContext
    device: torch.device
    layout: Layout
    autocast: Callable
    timer: PhaseTimer


class Stage(Protocol):
    learners: Learners  # what the run checkpoints and schedules

    @classmethod
    def prepare(cls, cfg: TrainConfig, ctx: DistContext, device: torch.device) -> Any:
        """Everything that can be wrong on disk or in the config, checked and read before any model
        loads (prompts, tokenizer, reward function, ...): the stage's inputs."""

    @classmethod
    def rank_local_state(cls, cfg: TrainConfig) -> bool:
        """Whether each rank keeps state of its own (a replay buffer): a checkpoint then resumes on
        the same number of ranks only."""

    @classmethod
    def check_memory(cls, cfg: TrainConfig, inputs: Any, env: RunEnv) -> str:
        """The memory estimate's line, printed before any model loads (or a one-line error)."""

    def describe(self) -> str:
        """The run's first log line: what trains on what."""

    def plot_title(self) -> str: ...

    def start(self) -> None:
        """The last thing built, after a resume has put the weights back (a generation engine)."""

    def step(self, step: int) -> dict:
        """One iteration; its metrics (the run adds step, lr and memory)."""

    def validate(self, step: int) -> dict:
        """Validation metrics (val/*; early_stop.metric names the one that early stopping, the plateau LR
        and the best model follow, rlhand/config/figures.py)."""

    def samples(self) -> list[dict]:
        """The last validation's readable samples ({prompt, response, scores}); [] where none."""

    def state_dict(self) -> dict:
        """The stage's global state besides its learners' (the same on every rank)."""

    def load_state_dict(self, state: dict) -> None: ...

    def rank_state_dict(self) -> Any:
        """What this rank holds alone besides its random streams (a replay buffer), or None."""

    def load_rank_state_dict(self, state: Any) -> None: ...

    def save(self, folder: Path, meta: dict | None = None) -> str:
        """final/ or best/: the stage's models as transformers folders; what was saved, in words."""

    def summary(self, history: list[dict]) -> str:
        """The run's last log line."""

    def close(self) -> None: ...
