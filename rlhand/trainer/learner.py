"""One trained model's execution: its optimizer, backward, gradient clipping and step.

The update (rlhand/trainer/update.py) decides what to compute; a Learner is how one model is
stepped. Everything that changes with the way a model is run (wrapping it for data parallelism,
scaling the loss to its gradient reduction, a global gradient norm) lives here, once per model.
"""

import torch
from torch import Tensor, nn


class Learner:
    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float | None):
        self.module, self.optimizer, self.max_grad_norm = module, optimizer, max_grad_norm

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def step(self) -> Tensor:
        """Clip the global gradient norm (max_grad_norm None: measure it only), then step;
        returns the norm before clipping."""
        norm = grad_norm(self.module, self.max_grad_norm)
        self.optimizer.step()
        return norm

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def grad_norm(module: nn.Module, max_norm: float | None) -> Tensor:
    """The global norm of `module`'s gradients, clipped to max_norm when it is set."""
    params = [p for p in module.parameters() if p.grad is not None]
    if max_norm is None:  # clip_grad_norm_(inf) would still multiply every gradient by 1.0
        return torch.nn.utils.get_total_norm([p.grad for p in params])
    return torch.nn.utils.clip_grad_norm_(params, max_norm)
