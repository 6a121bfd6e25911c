"""Forward passes over prompt + response: log-probs, per-token values and sequence scores.

Shapes: prompts (B, P) left-padded, responses (B, R) right-padded. Response token t is predicted
from position P-1+t, and V(s_t) is read at that same position. A model marked with
unpadded.enable runs on the real tokens only (model.remove_padding); its results come back in
the same (B, R) layout, with zeros where the response is padding (every caller masks those).
"""

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel

from rlhand.models.unpadded import packed_attention, uses_packing


@dataclass
class SequenceInputs:
    input_ids: Tensor  # (B, P+R)
    attention_mask: Tensor  # (B, P+R)
    position_ids: Tensor  # (B, P+R) counting real tokens only, so left pads do not shift them
    prompt_len: int  # P


def sequence_inputs(prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor) -> SequenceInputs:
    attention_mask = torch.cat([prompt_mask, response_mask.to(prompt_mask.dtype)], dim=1)
    return SequenceInputs(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=attention_mask,
        position_ids=positions_from_mask(attention_mask),
        prompt_len=prompt_ids.shape[1],
    )


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def response_logits(model: PreTrainedModel, inputs: SequenceInputs, temperature: float) -> Tensor:
    """(B, R, V) float32 logits / temperature at the positions that predict response tokens."""
    return policy_logits(model, inputs, temperature)[0]


def policy_logits(model: PreTrainedModel, inputs: SequenceInputs, temperature: float, with_hidden: bool = False):
    """response_logits and, `with_hidden`, the final hidden states at the same positions (B, R, d),
    as the model itself returns them (after its final norm): what a shared value head reads."""
    logits, hidden = _causal_lm_forward(model, inputs, with_hidden=with_hidden)
    return logits.float() / temperature, hidden


def _causal_lm_forward(model: PreTrainedModel, inputs: SequenceInputs, with_hidden: bool = False):
    """The model's own forward: (B, R, V) logits at the positions that predict response tokens and,
    `with_hidden`, the final hidden states there (B, R, d)."""
    response_len = inputs.input_ids.shape[1] - inputs.prompt_len
    if _packs(model, inputs):
        want = _response_positions(inputs)
        real = want[:, inputs.prompt_len - 1 : -1]  # (B, R): the response tokens those positions predict
        with packed_attention(model, inputs.attention_mask) as packing:
            kept = packing.slot[want]
            out = model(**_packed_inputs(inputs, packing), logits_to_keep=kept, output_hidden_states=with_hidden)
        hidden = _unpack(out.hidden_states[-1][0, kept], real) if with_hidden else None
        return _unpack(out.logits[0], real), hidden
    out = model(
        input_ids=inputs.input_ids,
        attention_mask=inputs.attention_mask,
        position_ids=inputs.position_ids,
        logits_to_keep=response_len + 1,
        output_hidden_states=with_hidden,
        use_cache=False,
    )
    hidden = out.hidden_states[-1][:, inputs.prompt_len - 1 : -1] if with_hidden else None
    return out.logits[:, :-1], hidden


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token], (B, R), without materialising the full log-softmax."""
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _hidden_states(model: PreTrainedModel, inputs: SequenceInputs, at: Tensor) -> Tensor:
    """The backbone's final hidden states at the (B, T) bool positions `at`, (K, d) in row-major order."""
    inner = _unwrapped(model)
    backbone = getattr(inner, inner.base_model_prefix)
    if _packs(model, inputs):
        with packed_attention(model, inputs.attention_mask) as packing:
            hidden = backbone(**_packed_inputs(inputs, packing)).last_hidden_state
        return hidden[0, packing.slot[at]]
    out = backbone(
        input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, position_ids=inputs.position_ids, use_cache=False
    )
    return out.last_hidden_state[at]


def _unwrapped(model):
    """The transformers model inside a LoRA (PEFT) wrapper, where its backbone and head live: the
    wrapper's own attributes can shadow them (Qwen2's backbone is `model`, as is PEFT's)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _packs(model: PreTrainedModel, inputs: SequenceInputs) -> bool:
    return uses_packing(model) and not bool(inputs.attention_mask.all())  # no padding: nothing to remove


def _packed_inputs(inputs: SequenceInputs, packing) -> dict:
    return {
        "input_ids": packing.pack(inputs.input_ids),
        "position_ids": packing.pack(inputs.position_ids),
        "attention_mask": packing.mask,  # 4D: transformers passes it through untouched
        "packing": packing,
        "use_cache": False,
    }


def _response_positions(inputs: SequenceInputs) -> Tensor:
    """(B, T) bool: the positions that predict a real response token (P-1+t for each real t)."""
    want = torch.zeros_like(inputs.attention_mask, dtype=torch.bool)
    want[:, inputs.prompt_len - 1 : -1] = inputs.attention_mask[:, inputs.prompt_len :].bool()
    return want


def _unpack(rows: Tensor, where: Tensor) -> Tensor:
    """(K, ...) rows -> (B, R, ...) with the rows at the K true entries of `where` (B, R), zeros elsewhere."""
    out = rows.new_zeros(*where.shape, *rows.shape[1:])
    out[where] = rows
    return out


def token_values(critic: PreTrainedModel, inputs: SequenceInputs) -> Tensor:
    """(B, R) float32 values V(s_t) from a *ForSequenceClassification critic's score head (a shared
    head reads the policy's forward instead: rlhand.models.critic)."""
    want = _response_positions(inputs)
    hidden = _hidden_states(critic, inputs, want)
    return _unpack(_unwrapped(critic).score(hidden).squeeze(-1).float(), want[:, inputs.prompt_len - 1 : -1])


def sequence_scores(reward_model: PreTrainedModel, inputs: SequenceInputs, last_index: Tensor) -> Tensor:
    """(B,) reward-model score read at each response's last real token (`last_index` into R)."""
    at = torch.zeros_like(inputs.attention_mask, dtype=torch.bool)
    at[torch.arange(at.shape[0], device=at.device), inputs.prompt_len + last_index] = True
    return _unwrapped(reward_model).score(_hidden_states(reward_model, inputs, at)).squeeze(-1).float()
