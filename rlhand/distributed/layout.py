"""How a run is laid out over its processes, decided once from the config and the world size: the
trainer's setup and the memory estimate both read it (trainer.strategy, trainer.frozen_models)."""

from dataclasses import dataclass
from enum import Enum

from rlhand.config.load import ConfigError
from rlhand.config.schema import FrozenModels, ModelConfig, Quantization, Strategy, TrainerConfig


class Parallel(str, Enum):
    single = "single"  # one process
    fsdp = "fsdp"  # FSDP2: trained models sharded over the ranks
    ddp = "ddp"  # trained models whole on every rank, gradients summed


@dataclass(frozen=True)
class Layout:
    ranks: int
    local_ranks: int  # the ranks on this machine (they share a CPU's memory)
    strategy: Parallel
    shard_frozen: bool  # the reference and reward model sharded like the trained models

    @property
    def trained_shards(self) -> int:
        """Over how many ranks a trained model's weights, gradients and optimizer states are split."""
        return self.ranks if self.strategy is Parallel.fsdp else 1

    @property
    def frozen_shards(self) -> int:
        return self.ranks if self.shard_frozen else 1

    @property
    def sums_gradients(self) -> bool:
        """ddp: each learner sums its gradients over ranks before the step (FSDP2 has reduced them)."""
        return self.strategy is Parallel.ddp


def engine_executor(ranks: int) -> str:
    """How a generation engine inside each training process runs: alone ("uni"), or in a job of
    several ranks joining the job's own process group ("external_launcher", TRL's colocate mode)."""
    return "external_launcher" if ranks > 1 else "uni"


def check_quantized_layout(model: ModelConfig, layout: Layout) -> None:
    """FSDP2 shards floating-point parameters; bitsandbytes' packed weights are not (tested: DDP only)."""
    if model.quantization is not Quantization.none and layout.strategy is Parallel.fsdp:
        raise ConfigError(f"model.quantization: {model.quantization.value} weights cannot be sharded by FSDP2; set trainer.strategy=ddp")
    if model.frozen_quantization is not Quantization.none and layout.shard_frozen:
        raise ConfigError(f"model.frozen_quantization: {model.frozen_quantization.value} weights cannot be sharded; set trainer.frozen_models=replicate")


def resolve_layout(trainer: TrainerConfig, ranks: int, local_ranks: int | None = None, quantized: bool = False) -> Layout:
    """The layout of a run of `ranks` processes, `local_ranks` of them on each machine; `quantized`
    (a quantized training base, which FSDP2 cannot shard) makes trainer.strategy=auto choose DDP."""
    if ranks == 1:
        return Layout(1, 1, Parallel.single, False)
    fsdp = trainer.strategy is Strategy.fsdp or (trainer.strategy is Strategy.auto and not quantized)
    strategy = Parallel.fsdp if fsdp else Parallel.ddp
    return Layout(ranks, local_ranks or ranks, strategy, trainer.frozen_models is FrozenModels.shard)
