"""Masked statistics over (B, T) tensors; `mask` is 1 where a token counts."""

import torch
from torch import Tensor


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    # where(), not x * mask: a NaN or inf at a pad position must not leak into the sum.
    kept = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over masked entries; an empty mask gives 0 (no host sync here: it runs per minibatch)."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over all masked entries; `unbiased` applies Bessel's n/(n-1)."""
    count = mask.sum()
    if count.item() == 0 or (unbiased and count.item() < 2):
        raise ValueError(f"masked_var needs at least {2 if unbiased else 1} masked entries, got {int(count.item())}")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return var * count / (count - 1) if unbiased else var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the mask (unbiased variance); pads come out exactly 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros((), dtype=x.dtype, device=x.device))


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var[returns - values] / Var[returns]; nan when the returns have no variance."""
    var_returns = masked_var(returns, mask, unbiased=False)
    residual = masked_var(returns - values, mask, unbiased=False)
    if var_returns.item() == 0:
        return torch.tensor(float("nan"))
    return 1 - residual / var_returns
