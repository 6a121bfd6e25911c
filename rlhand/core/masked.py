"""Masked statistics over (B, T) tensors; `mask` is 1 where a token counts.

Every statistic here takes a `reducer`: how tensors combine over the processes of a data-parallel
run. rlhand.distributed.context.DistContext is one (all-reduces over ranks, all-gathers); LOCAL is
the one process's, where each of them is the identity. The statistic is then always that of every
rank's tokens together, never a per-rank one, and the formula is written once.
"""

from typing import Protocol

import torch
from torch import Tensor


class Reducer(Protocol):
    """How tensors combine over the processes of a run (each returns a new tensor)."""

    def sum(self, tensor: Tensor) -> Tensor: ...

    def max(self, tensor: Tensor) -> Tensor: ...

    def min(self, tensor: Tensor) -> Tensor: ...

    def gather(self, tensor: Tensor) -> Tensor:
        """Every process's 1-D `tensor` (of the same length on each), concatenated in rank order."""
        ...


class _Local:
    """One process: every combination is the tensor itself."""

    def sum(self, tensor: Tensor) -> Tensor:
        return tensor

    max = min = gather = sum


LOCAL: Reducer = _Local()


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    # where(), not x * mask: a NaN or inf at a pad position must not leak into the sum.
    kept = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None, reducer: Reducer = LOCAL) -> Tensor:
    """Mean over masked entries (over every rank's, when dim is None); an empty mask gives 0 (no
    host sync here: it runs per minibatch). Along `dim`, each row's own mean (rows stay local)."""
    if dim is not None:
        return masked_sum(x, mask, dim) / mask.sum(dim).clamp(min=1)
    total, count = reducer.sum(torch.stack([masked_sum(x, mask), mask.sum().to(x.dtype)]))
    return total / count.clamp(min=1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True, reducer: Reducer = LOCAL) -> Tensor:
    """Variance over all masked entries of every rank; `unbiased` applies Bessel's n/(n-1)."""
    count = reducer.sum(mask.sum())
    if count.item() == 0 or (unbiased and count.item() < 2):
        raise ValueError(f"masked_var needs at least {2 if unbiased else 1} masked entries, got {int(count.item())}")
    mean = masked_mean(x, mask, reducer=reducer)
    var = masked_mean((x - mean) ** 2, mask, reducer=reducer)
    return var * count / (count - 1) if unbiased else var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, reducer: Reducer = LOCAL) -> Tensor:
    """(x - mean) / std over the mask of every rank (unbiased variance); pads come out exactly 0."""
    mean, var = masked_mean(x, mask, reducer=reducer), masked_var(x, mask, reducer=reducer)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros((), dtype=x.dtype, device=x.device))


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor, reducer: Reducer = LOCAL) -> Tensor:
    """1 - Var[returns - values] / Var[returns] over every rank's tokens; nan when the returns have no variance."""
    var_returns = masked_var(returns, mask, unbiased=False, reducer=reducer)
    residual = masked_var(returns - values, mask, unbiased=False, reducer=reducer)
    if var_returns.item() == 0:
        return torch.tensor(float("nan"))
    return 1 - residual / var_returns


def mean(x: Tensor, reducer: Reducer = LOCAL) -> Tensor:
    """The mean of every entry of `x`, of every rank's `x` (x.mean() in one process, bit for bit)."""
    total, count = reducer.sum(torch.stack([x.sum(), torch.tensor(x.numel(), dtype=x.dtype, device=x.device)]))
    return total / count


def std(x: Tensor, reducer: Reducer = LOCAL) -> Tensor:
    """Unbiased standard deviation of every entry of `x`, of every rank's `x` (gathered: the
    exact figure, not a sum-of-squares one); 0 for one entry."""
    everything = reducer.gather(x.reshape(-1))
    return everything.std() if everything.numel() > 1 else torch.zeros((), dtype=x.dtype, device=x.device)
