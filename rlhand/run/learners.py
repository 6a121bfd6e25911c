"""One trained model's execution: its optimizer, backward, gradient clipping and step; the set of
them a stage trains (what a checkpoint holds, what the LR schedule steps).

A stage's update decides what to compute; a Learner is how one model is stepped. What changes with the way a model is run over ranks lives here, once per model: under
`ddp` the learner sums the gradients over ranks before its step; under `fsdp` FSDP2 has already
reduce-scattered them (as sums, rlhand/distributed/sharding.py) and the norm is global by
construction. Losses are normalised by global token / sequence counts, so summed gradients are
the gradient of the whole batch, however it is split over ranks.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rlhand.distributed.context import DistContext


def adamw_learner(module: nn.Module, lr: float, algo, ctx: DistContext, sum_gradients: bool) -> "Learner":
    """A learner with its own AdamW over `module`'s trained parameters (built after sharding: over
    FSDP2's shards it keeps sharded states). fused: one kernel for all parameters, CPU and CUDA."""
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, eps=algo.adam_eps, weight_decay=algo.weight_decay, fused=True)
    return Learner(module, optimizer, algo.max_grad_norm, ctx, sum_gradients=sum_gradients)


class Learner:
    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float | None,
        ctx: DistContext | None = None,
        sum_gradients: bool = False,
    ):
        self.module, self.optimizer, self.max_grad_norm = module, optimizer, max_grad_norm
        self.ctx = ctx or DistContext()
        self.sum_gradients = sum_gradients  # ddp: replicated weights, gradients summed here

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    @contextmanager
    def training(self):
        """Train mode for the update's forward and backward where it matters: transformers applies
        gradient checkpointing in train mode only. Dropout stays off (every rate is 0), so the
        function is the one that sampled; eval mode (the sampler's KV cache) comes back after."""
        checkpointed = activation_checkpointing(self.module)
        if checkpointed:
            self.module.train()
        try:
            yield
        finally:
            if checkpointed:
                self.module.eval()

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def step(self) -> Tensor:
        """Clip the global gradient norm (max_grad_norm None: measure it only), then step;
        returns the norm before clipping."""
        if self.sum_gradients:
            sum_over_ranks([p.grad for p in self.module.parameters() if p.grad is not None], self.ctx)
        norm = grad_norm(self.module, self.max_grad_norm)
        self.optimizer.step()
        return norm

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def grad_norm(module: nn.Module, max_norm: float | None) -> Tensor:
    """The global norm of `module`'s gradients, clipped to max_norm when it is set (a plain tensor
    also when the gradients are sharded DTensors)."""
    params = [p for p in module.parameters() if p.grad is not None]
    if max_norm is None:  # clip_grad_norm_(inf) would still multiply every gradient by 1.0
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    else:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def sum_over_ranks(grads: list[Tensor], ctx: DistContext) -> None:
    """Sum gradients over ranks in place, through one flat buffer (one collective, not one per tensor)."""
    if not grads:
        return
    flat = ctx.sum(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def activation_checkpointing(module: nn.Module) -> bool:
    """Whether transformers checkpoints `module`'s activations (inside a LoRA wrapper too). The
    attribute was is_gradient_checkpointing before transformers 5.24, which deprecates that name."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    name = "is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(base, name, False))


@dataclass
class Learners:
    """The learners a stage trains, by name: what a checkpoint holds under those names, in order."""

    by_name: dict[str, Learner]

    @classmethod
    def of(cls, **learners: "Learner | None") -> "Learners":
        """Learners.of(policy=..., critic=None): a learner given as None is not there (no critic)."""
        return cls({name: learner for name, learner in learners.items() if learner is not None})

    @property
    def policy(self) -> Learner:
        return self.by_name["policy"]

    @property
    def critic(self) -> "Learner | None":
        return self.by_name.get("critic")

    def all(self) -> list[Learner]:
        return list(self.by_name.values())

    def named(self) -> dict[str, Learner]:
        return dict(self.by_name)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [learner.optimizer for learner in self.all()]
