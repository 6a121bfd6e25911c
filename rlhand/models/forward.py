"""Forward passes over prompt + response: log-probs, per-token values and sequence scores.

Shapes: prompts (B, P) left-padded, responses (B, R) right-padded. Response token t is predicted
from position P-1+t, and V(s_t) is read at that same position.
"""

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel

from rlhand.models.value_head import SharedValueHead


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
    return _causal_lm_forward(model, inputs).logits[:, :-1].float() / temperature


def _causal_lm_forward(model: PreTrainedModel, inputs: SequenceInputs, output_hidden_states: bool = False):
    """The model's own forward, keeping logits only from the position before the first response token."""
    response_len = inputs.input_ids.shape[1] - inputs.prompt_len
    return model(
        input_ids=inputs.input_ids,
        attention_mask=inputs.attention_mask,
        position_ids=inputs.position_ids,
        logits_to_keep=response_len + 1,
        output_hidden_states=output_hidden_states,
        use_cache=False,
    )


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token], (B, R), without materialising the full log-softmax."""
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _hidden_states(model: PreTrainedModel, inputs: SequenceInputs) -> Tensor:
    backbone = getattr(model, model.base_model_prefix)
    out = backbone(
        input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, position_ids=inputs.position_ids, use_cache=False
    )
    return out.last_hidden_state


def token_values(critic: PreTrainedModel, inputs: SequenceInputs) -> Tensor:
    """(B, R) float32 values V(s_t) from a *ForSequenceClassification critic's score head (a shared
    head reads the policy's forward instead: logits_and_values, or the sampler at rollout)."""
    hidden = _hidden_states(critic, inputs)[:, inputs.prompt_len - 1 : -1]
    return critic.score(hidden).squeeze(-1).float()


def logits_and_values(
    policy: PreTrainedModel, critic: PreTrainedModel | SharedValueHead, inputs: SequenceInputs, temperature: float
) -> tuple[Tensor, Tensor]:
    """(B, R, V) response logits / temperature and (B, R) values: two forwards with a critic of its
    own, one with a shared head (the policy's final hidden state, as the model itself returns it)."""
    if not isinstance(critic, SharedValueHead):
        return response_logits(policy, inputs, temperature), token_values(critic, inputs)
    out = _causal_lm_forward(policy, inputs, output_hidden_states=True)
    values = critic.values(out.hidden_states[-1][:, inputs.prompt_len - 1 : -1])
    return out.logits[:, :-1].float() / temperature, values


def sequence_scores(reward_model: PreTrainedModel, inputs: SequenceInputs, last_index: Tensor) -> Tensor:
    """(B,) reward-model score read at each response's last real token (`last_index` into R)."""
    hidden = _hidden_states(reward_model, inputs)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return reward_model.score(hidden[rows, inputs.prompt_len + last_index]).squeeze(-1).float()
