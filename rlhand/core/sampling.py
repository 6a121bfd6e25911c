"""Top-k / top-p truncation of a next-token distribution, and the probability mass it keeps.

What a token's log-prob means in rlhand: its log-prob under the policy's tempered softmax over the
whole vocabulary, the distribution the update differentiates. Top-k and top-p only decide which
tokens can be drawn. The hf engine records that log-prob as it samples; vLLM reports the log-prob
under the truncated, renormalised distribution it drew from (log pi(a) - log Z, Z the kept mass),
so the trainer adds back log Z from its own logits (rlhand/rollout/collect.py). Both engines' and
the trainer's log-probs then mean the same thing, and the importance weight pi_prox / pi_behaviour
measures the engines' numerical disagreement only (it would otherwise be Z, 0.2-0.5 with top_k=5,
whatever token was drawn). Like the anchors, rlhand does not importance-correct the truncation itself.
"""

import torch
from torch import Tensor


def filter_logits(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """Mask logits outside the top-k / nucleus (top-p) set with -inf; 0 and 1.0 switch them off."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token once the mass before it already reaches top_p (the best token always stays).
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def truncates(top_k: int, top_p: float) -> bool:
    return top_k > 0 or top_p < 1.0


@torch.no_grad()
def kept_log_mass(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """log Z per row: log of the probability that top-k / top-p keep (0 when they keep everything)."""
    if not truncates(top_k, top_p):
        return torch.zeros(logits.shape[:-1], dtype=torch.float32, device=logits.device)
    return torch.logsumexp(filter_logits(logits, top_k, top_p), dim=-1) - torch.logsumexp(logits, dim=-1)
