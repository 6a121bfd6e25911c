"""Batched sampling with a KV cache, recording each token's log-prob exactly as it was sampled."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import transformers
from packaging.version import Version
from torch import Tensor
from transformers import PreTrainedModel

from rlhand.core.sampling import filter_logits
from rlhand.models.forward import positions_from_mask
from rlhand.models.value_head import SharedValueHead

# transformers 5.24 renamed the forward's `past_key_values` (argument and output) to `cache`; the old
# name warns there and is announced for removal in 5.40. Older releases (the CPU vLLM build pins
# < 5.20) only know the old name.
CACHE_KEY = "cache" if Version(transformers.__version__).release >= (5, 24) else "past_key_values"


@dataclass
class Samples:
    response_ids: Tensor  # (B, R) pad after the first EOS
    response_mask: Tensor  # (B, R) 1 up to and including the first EOS
    logprobs: Tensor  # (B, R) log pi_behaviour(token) under the tempered softmax; 0 outside the mask
    ended: Tensor  # (B,) bool: the response emitted EOS
    values: Tensor | None = None  # (B, R) V(s_t) from a shared value head, read while sampling


def draw_token(last_logits: Tensor, done: Tensor, temperature: float, top_k: int, top_p: float, pad_id: int, generator) -> tuple[Tensor, Tensor]:
    """One token per row from the top-k / top-p filtered tempered distribution, and its log-prob
    under the whole tempered softmax (pad and 0 for rows that already ended)."""
    logits = last_logits.float() / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = torch.softmax(filter_logits(logits, top_k, top_p), dim=-1)
    token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    token = torch.where(done, torch.full_like(token, pad_id), token)
    return token, torch.where(done, 0.0, log_probs.gather(-1, token.unsqueeze(-1)).squeeze(-1))


@torch.no_grad()
def sample_responses(
    policy: PreTrainedModel,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_ids: "int | Sequence[int]",
    pad_id: int,
    generator: torch.Generator | None = None,
    value_head: SharedValueHead | None = None,
) -> Samples:
    """`generator`: None draws from torch's global RNG (training); validation passes its own so
    that it neither disturbs training's random stream nor varies between validations.
    `value_head`: also return V(s_t), read from the hidden state that predicts token t, so a
    shared-backbone critic needs no forward pass of its own at rollout."""
    batch = prompt_ids.shape[0]
    device = prompt_ids.device
    stops = stop_tensor(eos_ids, device)
    # "Has every row ended?" is the loop's one host sync. On a GPU it stalls the queue of kernels, so it
    # is asked every 16 tokens (rows that ended meanwhile only add pad columns, masked out).
    check_every = 1 if device.type == "cpu" else 16
    attention_mask = prompt_mask
    positions = positions_from_mask(prompt_mask)
    with_values = value_head is not None
    out = policy(input_ids=prompt_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, logits_to_keep=1, output_hidden_states=with_values)
    next_position = positions[:, -1:] + 1
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, logprobs, values = [], [], []
    for step in range(max_new_tokens):
        if with_values:
            values.append(value_head.values(out.hidden_states[-1][:, -1]))
        token, logprob = draw_token(out.logits[:, -1], done, temperature, top_k, top_p, pad_id, generator)
        tokens.append(token)
        logprobs.append(logprob)
        done = done | torch.isin(token, stops)
        if step == max_new_tokens - 1 or ((step + 1) % check_every == 0 and bool(done.all())):
            break
        attention_mask = torch.cat([attention_mask, (~done).long().unsqueeze(-1)], dim=1)
        cache = {CACHE_KEY: getattr(out, CACHE_KEY)}
        out = policy(input_ids=token.unsqueeze(-1), attention_mask=attention_mask, position_ids=next_position, use_cache=True, **cache, output_hidden_states=with_values)
        next_position = next_position + 1
    response_ids = torch.stack(tokens, dim=1)
    return Samples(
        response_ids=response_ids,
        response_mask=response_mask_from_eos(response_ids, stops),
        logprobs=torch.stack(logprobs, dim=1),
        ended=torch.isin(response_ids, stops).any(dim=1),
        values=torch.stack(values, dim=1) if with_values else None,
    )


def stop_tensor(eos_ids: "int | Sequence[int] | Tensor", device) -> Tensor:
    """The ids a response ends at (the model's EOS ids: Qwen2.5-Instruct has two) as a tensor."""
    if isinstance(eos_ids, Tensor):
        return eos_ids.to(device)
    return torch.tensor([eos_ids] if isinstance(eos_ids, int) else list(eos_ids), dtype=torch.long, device=device)


def response_mask_from_eos(response_ids: Tensor, eos_ids: "int | Sequence[int] | Tensor") -> Tensor:
    """(B, R) 1 up to and including the first EOS, any of `eos_ids` (everything when there is none)."""
    is_eos = torch.isin(response_ids, stop_tensor(eos_ids, response_ids.device)).long()
    eos_seen_before = is_eos.cumsum(dim=1) - is_eos
    return (eos_seen_before == 0).long()
