"""Masked statistics over (B, T) tensors; `mask` is 1 where a token counts.

`reduce`, where a function takes it, sums a tensor over every process of a data-parallel run
(rlhand.distributed.context.DistContext.sum): the statistic is then that of all ranks' tokens
together, never a per-rank one. None (one process) computes over the tensors given.
"""

from collections.abc import Callable

import torch
from torch import Tensor

Reduce = Callable[[Tensor], Tensor]


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    # where(), not x * mask: a NaN or inf at a pad position must not leak into the sum.
    kept = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None, reduce: Reduce | None = None) -> Tensor:
    """Mean over masked entries; an empty mask gives 0 (no host sync here: it runs per minibatch).
    With `reduce` (dim None): the mean over every rank's masked entries."""
    if reduce is not None and dim is None:
        total, count = reduce(torch.stack([masked_sum(x, mask), mask.sum().to(x.dtype)]))
        return total / count.clamp(min=1)
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True, reduce: Reduce | None = None) -> Tensor:
    """Variance over all masked entries (of every rank, with `reduce`); `unbiased` applies Bessel's n/(n-1)."""
    count = mask.sum() if reduce is None else reduce(mask.sum())
    if count.item() == 0 or (unbiased and count.item() < 2):
        raise ValueError(f"masked_var needs at least {2 if unbiased else 1} masked entries, got {int(count.item())}")
    mean = masked_mean(x, mask, reduce=reduce)
    var = masked_mean((x - mean) ** 2, mask, reduce=reduce)
    return var * count / (count - 1) if unbiased else var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, reduce: Reduce | None = None) -> Tensor:
    """(x - mean) / std over the mask (unbiased variance; every rank's entries with `reduce`);
    pads come out exactly 0."""
    mean, var = masked_mean(x, mask, reduce=reduce), masked_var(x, mask, reduce=reduce)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros((), dtype=x.dtype, device=x.device))


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor, reduce: Reduce | None = None) -> Tensor:
    """1 - Var[returns - values] / Var[returns]; nan when the returns have no variance."""
    var_returns = masked_var(returns, mask, unbiased=False, reduce=reduce)
    residual = masked_var(returns - values, mask, unbiased=False, reduce=reduce)
    if var_returns.item() == 0:
        return torch.tensor(float("nan"))
    return 1 - residual / var_returns


def mean(x: Tensor, reduce: Reduce | None = None) -> Tensor:
    """The mean of every entry of `x` (of every rank's `x`, with `reduce`)."""
    if reduce is None:
        return x.mean()
    total, count = reduce(torch.stack([x.sum(), torch.tensor(x.numel(), dtype=x.dtype, device=x.device)]))
    return total / count


def std(x: Tensor, reduce: Reduce | None = None) -> Tensor:
    """Unbiased standard deviation of every entry of `x` (of every rank's, with `reduce`); 0 for one entry."""
    if reduce is None:
        return x.std() if x.numel() > 1 else torch.zeros((), dtype=x.dtype, device=x.device)
    total, squares, count = reduce(torch.stack([x.sum(), (x * x).sum(), torch.tensor(x.numel(), dtype=x.dtype, device=x.device)]))
    if count < 2:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    return ((squares - total * total / count) / (count - 1)).clamp(min=0).sqrt()
