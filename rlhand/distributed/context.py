"""The process group a run belongs to, and the collectives the trainer needs.

`rlhand-train` alone is one process; `torchrun --nproc-per-node N -m rlhand.train ...` (or a SLURM
job of N tasks through hydra/launcher=slurm) makes N ranks. Every rank runs the same trainer on
its own shard of each batch; statistics are reduced across ranks (a DistContext is the reducer
that every statistic of rlhand/core/masked.py takes), and rank 0 alone writes logs, metrics, plots
and final models.

On one process every collective here is the identity, so the single-process run does exactly what
it did before there were ranks.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

# Long enough for a slow rank's checkpoint or validation, short enough that a dead peer is noticed.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # the ranks on this machine

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """A reduced copy of `tensor` (sum, max or min over ranks); `tensor` itself is left alone."""
        if not self.enabled:
            return tensor
        out = tensor.detach().clone()
        dist.all_reduce(out, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
        return out

    # The reducer every statistic takes (rlhand.core.masked.Reducer): the identity in one process.
    def sum(self, tensor: Tensor) -> Tensor:
        return self.all_reduce(tensor, "sum")

    def max(self, tensor: Tensor) -> Tensor:
        return self.all_reduce(tensor, "max")

    def min(self, tensor: Tensor) -> Tensor:
        return self.all_reduce(tensor, "min")

    def slowest(self, figures: dict[str, float]) -> dict[str, float]:
        """Times and memory peaks by name: the largest over ranks (the slowest rank sets the pace)."""
        keys = sorted(figures)
        worst = self.max(torch.tensor([float(figures[k]) for k in keys], dtype=torch.float64))
        return dict(zip(keys, worst.tolist()))

    def gather(self, tensor: Tensor) -> Tensor:
        """Every rank's 1-D `tensor` (the same length on each), concatenated in rank order."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.detach().contiguous())
        return torch.cat(parts)

    def broadcast_object(self, obj, src: int = 0):
        """Rank `src`'s object on every rank (a decision one rank makes for all)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_object(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def rank_seed(self, seed: int) -> int:
        """A seed of this rank's own (the run's seed itself in one process)."""
        if not self.enabled:
            return seed
        import numpy as np

        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def reseed_for_rank(self, seed: int, seed_everything: Callable[[int], None]) -> None:
        """After the models are built from the run's seed (identical on every rank, to shard or
        replicate), each rank samples and shuffles with a stream of its own; one process keeps
        the stream it is in."""
        if self.enabled:
            seed_everything(self.rank_seed(seed))

    def cuda_device(self) -> torch.device:
        """This process's GPU: its LOCAL_RANK's in a job of several ranks."""
        return torch.device("cuda", self.local_rank) if self.enabled else torch.device("cuda")

    def label(self, program: str) -> str:
        """How this process signs its messages: "rlhand-train[rank 1]" beside rank 0's "rlhand-train"."""
        return f"{program}[rank {self.rank}]" if self.enabled and not self.is_main else program

    def shard(self, count: int) -> slice:
        """This rank's contiguous share of `count` items (count divides by the world size)."""
        per_rank = count // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


_current = DistContext()


def current() -> DistContext:
    """The context of this process (single-process unless init_from_env found ranks)."""
    return _current


def init_from_env() -> DistContext:
    """Join the process group that torchrun (RANK, WORLD_SIZE, MASTER_ADDR, ...) or a SLURM job of
    several tasks describes; a single process otherwise. Idempotent. Collectives on CPU tensors go
    through gloo, on CUDA tensors through nccl (one group serves both)."""
    global _current
    if dist.is_initialized():
        return _current
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        export_slurm_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _current
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    _current = DistContext(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world)
    return _current


def export_slurm_env() -> None:
    """SLURM's task variables (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST, ...) as
    torch's env:// ones, MASTER_ADDR being the job's first host and MASTER_PORT derived from the job
    id unless set. submitit's reading of them also serves a plain `srun python -m rlhand.train`."""
    from submitit.helpers import TorchDistributedEnvironment

    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


FAILED_KEY = "rlhand/failed_rank"
# What gloo and nccl say when the rank at the other end of a collective is gone.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def announce_failure(rank: int) -> None:
    """Leave word in the job's store that this rank is stopping on an error, so that a rank left
    waiting in a collective can say which one failed. Best effort: the store may be gone too."""
    try:
        if dist.is_initialized():
            dist.distributed_c10d._get_default_store().set(FAILED_KEY, str(rank))
    except Exception:  # noqa: BLE001 - a failing job's last word must not raise a second error
        pass


def peer_failure(err: BaseException) -> str | None:
    """For a collective that failed because another rank is gone: one line saying which rank (if it
    left word) or that one stopped answering; None for any other error."""
    if not _current.enabled or not (isinstance(err, dist.DistError) or any(text in str(err) for text in _PEER_GONE)):
        return None
    try:
        store = dist.distributed_c10d._get_default_store()
        if store.check([FAILED_KEY]):
            return f"rank {store.get(FAILED_KEY).decode()} failed (its error is above); this rank stopped with it"
    except Exception:  # noqa: BLE001 - the store went with the job
        pass
    return "another rank stopped answering (killed, or its machine went down); this rank stopped with it"


_before_leaving: list[Callable[[], None]] = []


def before_leaving(step: Callable[[], None]) -> None:
    """Run `step` in shutdown, after the last barrier and before the process group goes (a vLLM
    engine that shares the group, whose own shutdown destroys it); at once in one process."""
    if _current.enabled:
        _before_leaving.append(step)
    else:
        step()


def shutdown(wait_for_others: bool = True) -> None:
    """Leave the process group: a barrier first, without which ~1 run in 8 aborts at exit
    ('terminate called without an active exception'). After a fault, no barrier: the other ranks
    may be gone, or stuck in a collective until their launcher stops them."""
    global _current
    try:
        if dist.is_initialized() and wait_for_others:
            dist.barrier()
    finally:
        while _before_leaving:
            _before_leaving.pop()()
        if dist.is_initialized():
            dist.destroy_process_group()
    _current = DistContext()
