"""Token log-probs and entropies from final hidden states, without the whole (N, V) logits.

At a real vocabulary (151,936 for Qwen2.5) a batch's float32 logits outgrow everything else: 64
responses x 256 tokens are 10 GB, and autograd keeps several tensors of that size for the backward
(logits, softmax, log-sum-exp). Here the output layer runs a chunk of positions at a time: each
chunk's logits live only while its log-probs, entropies (and, for the backward, its gradient) are
computed, then go. The backward recomputes each chunk's logits instead of keeping them (like
verl's and Liger's fused linear + cross-entropy), so memory is one chunk's logits whatever the
batch.

The values are those of the plain computation, logits = h W^T (+ b), / temperature, log-softmax at
the token, entropy of softmax, with the same operations in the same order; one chunk (a chunk as
large as the batch) gives the same bits as the unchunked path. Under autocast the output layer
computes in the autocast dtype, as nn.Linear would.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def chunk_rows(vocab_size: int, chunk_bytes: int | None, rows: int) -> int:
    """Positions per chunk so that one chunk's float32 logits take at most `chunk_bytes` (None: all rows)."""
    if chunk_bytes is None:
        return max(rows, 1)
    return max(1, min(rows, chunk_bytes // (4 * vocab_size)))


def token_logprobs_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tokens: Tensor,
    temperature: float,
    *,
    chunk: int,
    entropy: bool = True,
    entropy_grad: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """(N,) log softmax(h W^T + b / T)[token] and (N,) entropies (None when `entropy` is False) for
    the N rows of `hidden` (N, d), `chunk` rows of logits at a time. The log-probs are
    differentiable in hidden, weight and bias; the entropies too with `entropy_grad`.

    When one chunk holds every row, this is the plain computation with autograd's own backward (a
    small vocabulary's case, bit for bit what it always was); otherwise each chunk's logits are
    recomputed in the backward (the same values, gradients equal to float rounding)."""
    compute = _compute_dtype(hidden, weight)
    n = hidden.shape[0]
    if chunk >= n:
        z = _chunk_logits(hidden, weight, bias, temperature, compute)
        lse = torch.logsumexp(z, dim=-1)
        logprobs = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
        if not entropy:
            return logprobs, None
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            return logprobs, _entropy(z)
    logprobs, entropies = _ChunkedOutputLayer.apply(hidden, weight, bias, tokens, float(temperature), int(chunk), bool(entropy), bool(entropy_grad), compute)
    return logprobs, (entropies if entropy else None)


def _entropy(z: Tensor) -> Tensor:
    """Entropy of softmax(z) per row, as rlhand.core.losses.entropy_from_logits computes it."""
    return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(dim=-1)


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype nn.Linear would compute in here: the autocast dtype when autocast is on, else the weight's."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _chunk_logits(h: Tensor, weight: Tensor, bias: Tensor | None, temperature: float, compute: torch.dtype) -> Tensor:
    with torch.autocast(h.device.type, enabled=False):
        z = F.linear(h.to(compute), weight.to(compute), None if bias is None else bias.to(compute))
    return z.float() / temperature


class _ChunkedOutputLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, temperature, chunk, want_entropy, entropy_grad, compute):
        n = hidden.shape[0]
        logprobs = torch.empty(n, dtype=torch.float32, device=hidden.device)
        entropies = torch.zeros(n if want_entropy else 0, dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            z = _chunk_logits(hidden[start:end], weight, bias, temperature, compute)
            lse = torch.logsumexp(z, dim=-1)
            logprobs[start:end] = z.gather(-1, tokens[start:end].unsqueeze(-1)).squeeze(-1) - lse
            if want_entropy:
                entropies[start:end] = _entropy(z)
            del z
        ctx.save_for_backward(hidden, weight, bias, tokens)
        ctx.settings = (temperature, chunk, compute)
        ctx.set_materialize_grads(False)  # an output no loss uses gets None, not a tensor of zeros
        if not (want_entropy and entropy_grad):
            ctx.mark_non_differentiable(entropies)
        return logprobs, entropies

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropies):
        hidden, weight, bias, tokens = ctx.saved_tensors
        temperature, chunk, compute = ctx.settings
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        with_logprobs = grad_logprobs is not None
        with_entropy = grad_entropies is not None and grad_entropies.numel() > 0
        for start in range(0, hidden.shape[0], chunk):
            end = min(hidden.shape[0], start + chunk)
            h = hidden[start:end]
            z = _chunk_logits(h, weight, bias, temperature, compute)
            p = torch.softmax(z, dim=-1)
            # d logp[token] / dz = onehot(token) - p;  d entropy / dz = -p (z - E_p[z]).
            gz = torch.zeros_like(z)
            if with_logprobs:
                g_lp = grad_logprobs[start:end].float()
                gz = p * (-g_lp).unsqueeze(-1)
                gz.scatter_add_(-1, tokens[start:end].unsqueeze(-1), g_lp.unsqueeze(-1))
            if with_entropy:
                g_ent = grad_entropies[start:end].float().unsqueeze(-1)
                expected = (p * z).sum(dim=-1, keepdim=True)
                gz -= g_ent * p * (z - expected)
            del p, z
            gz = (gz / temperature).to(compute)
            if need_h:
                grad_h[start:end] = (gz @ weight.to(compute)).to(hidden.dtype)
            if need_w:
                grad_w += (gz.t() @ h.to(compute)).float()
            if need_b:
                grad_b += gz.float().sum(dim=0)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None


@torch.no_grad()
def token_kept_log_mass(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float, top_k: int, top_p: float, *, chunk: int) -> Tensor:
    """(N,) log of the probability mass that top-k / top-p keep at each row's tempered softmax
    (rlhand/core/sampling.py), `chunk` rows of logits at a time."""
    from rlhand.core.sampling import kept_log_mass

    compute = _compute_dtype(hidden, weight)
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        end = min(hidden.shape[0], start + chunk)
        out[start:end] = kept_log_mass(_chunk_logits(hidden[start:end], weight, bias, temperature, compute), top_k, top_p)
    return out
