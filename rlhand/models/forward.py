"""Forward passes over prompt + response: log-probs, entropies, per-token values and sequence scores.

Shapes: prompts (B, P) left-padded, responses (B, R) right-padded. Response token t is predicted
from position P-1+t, and V(s_t) is read at that same position. A model marked with
unpadded.enable runs on the real tokens only (model.remove_padding); its results come back in
the same (B, R) layout, with zeros where the response is padding (every caller masks those).

A causal LM's output layer never produces the (B, R, V) logits here: `policy_forward` taps the
layer inside the model's own forward (so sharded weights are gathered, LoRA wrappers and packing
work as they do for any forward) and computes each position's log-prob and entropy from its final
hidden state a chunk of positions at a time (rlhand/core/logprobs.py). `chunk_bytes` bounds one
chunk's float32 logits; at a real vocabulary that is the difference between 10 GB and 256 MB.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from rlhand.core.logprobs import chunk_rows, token_kept_log_mass, token_logprobs_entropy
from rlhand.models.unpadded import packed_attention, uses_packing

# Config fields of models whose forward changes the logits after the output layer (Gemma's
# softcapping, Cohere's and Granite's scales). Their logits are computed whole, as the model does.
LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling")


@dataclass
class SequenceInputs:
    input_ids: Tensor  # (B, P+R)
    attention_mask: Tensor  # (B, P+R)
    position_ids: Tensor  # (B, P+R) counting real tokens only, so left pads do not shift them
    prompt_len: int  # P

    def rows(self, index: slice) -> "SequenceInputs":
        """The same sequences' rows `index` (scoring in micro-batches)."""
        return SequenceInputs(self.input_ids[index], self.attention_mask[index], self.position_ids[index], self.prompt_len)


@dataclass(frozen=True)
class ForwardLimits:
    """How large one forward's pieces may be: one chunk's float32 logits through the output layer
    (trainer.logits_chunk_mb), and the tokens of one no-grad scoring forward (trainer.score_max_tokens,
    rlhand/models/scoring.py). None: no limit."""

    logit_chunk_bytes: int | None = None
    score_max_tokens: int | None = None


@dataclass
class PolicyOutputs:
    logprobs: Tensor  # (B, R) float32 log pi(token) under the tempered softmax; 0 at padding
    entropy: Tensor | None  # (B, R) entropy of the tempered softmax, when asked for
    hidden: Tensor | None  # (B, R, d) final hidden states (after the final norm), when asked for
    kept_log_mass: Tensor | None = None  # (B, R) log of the mass top-k / top-p keep, when asked for (no grad)


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


def policy_forward(
    model: PreTrainedModel,
    inputs: SequenceInputs,
    temperature: float,
    *,
    entropy: bool = False,
    entropy_grad: bool = False,
    with_hidden: bool = False,
    chunk_bytes: int | None = None,
    truncation: tuple[int, float] | None = None,
) -> PolicyOutputs:
    """Log-probs of the response tokens (and entropies, final hidden states) from one forward.
    The log-probs are differentiable; the entropies with `entropy_grad` (an entropy bonus).
    `truncation` (top_k, top_p): also the log of the probability mass they keep at each position."""
    head = _output_layer(model)
    if head is None:
        return _from_whole_logits(model, inputs, temperature, entropy, entropy_grad, with_hidden, truncation)
    response_len = inputs.input_ids.shape[1] - inputs.prompt_len
    if _packs(model, inputs):
        want = _response_positions(inputs)
        real = want[:, inputs.prompt_len - 1 : -1]  # (B, R): the response tokens those positions predict
        next_tokens = torch.nn.functional.pad(inputs.input_ids[:, 1:], (0, 1))
        with packed_attention(model, inputs.attention_mask) as packing:
            kept = packing.slot[want]
            with _tapped(head, next_tokens[want].unsqueeze(0), temperature, (entropy, entropy_grad), chunk_bytes, truncation) as tap:
                model(**_packed_inputs(inputs, packing), logits_to_keep=kept)
        rows = tap.result[0]
        hidden = _unpack(tap.hidden[0], real) if with_hidden else None
        kept_mass = _unpack(tap.kept_log_mass[0], real) if truncation else None
        return PolicyOutputs(_unpack(rows[:, 0], real), _unpack(rows[:, 1], real) if entropy else None, hidden, kept_mass)
    # The output layer sees positions P-1 .. P+R-1; the last predicts nothing (token 0 stands in).
    tokens = torch.nn.functional.pad(inputs.input_ids[:, inputs.prompt_len :], (0, 1))
    with _tapped(head, tokens, temperature, (entropy, entropy_grad), chunk_bytes, truncation) as tap:
        model(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            position_ids=inputs.position_ids,
            logits_to_keep=response_len + 1,
            use_cache=False,
        )
    rows = tap.result[:, :-1]
    hidden = tap.hidden[:, :-1] if with_hidden else None
    kept_mass = tap.kept_log_mass[:, :-1] if truncation else None
    return PolicyOutputs(rows[..., 0], rows[..., 1] if entropy else None, hidden, kept_mass)


class _Tap:
    """What one forward's output layer saw, and what was computed in its place."""

    hidden: Tensor
    result: Tensor  # (..., 2): log-prob, entropy (or a copy of the log-prob when no entropy is asked)
    kept_log_mass: Tensor | None = None  # (...) with a truncation


@contextmanager
def _tapped(head: nn.Linear, tokens: Tensor, temperature: float, entropy: tuple[bool, bool], chunk_bytes: int | None, truncation=None):
    """For the forward inside the block: the output layer's input (the final hidden states at the
    kept positions, (..., d)) goes to chunked log-probs of `tokens` (the same leading shape) instead
    of through the layer, and the layer returns those as its output, (..., 2). Computed inside the
    forward, where sharded weights are gathered; returned as the model's output, so a sharded
    model's backward hooks see it."""
    tap = _Tap()

    def before(module, args):
        (hidden,) = args
        tap.hidden = hidden
        flat = hidden.reshape(-1, hidden.shape[-1])
        chunk = chunk_rows(module.out_features, chunk_bytes, flat.shape[0])
        logprobs, entropies = token_logprobs_entropy(
            flat, module.weight, module.bias, tokens.reshape(-1), temperature, chunk=chunk, entropy=entropy[0], entropy_grad=entropy[1]
        )
        second = entropies if entropies is not None else logprobs.detach()
        tap.result = torch.stack([logprobs, second], dim=-1).view(*hidden.shape[:-1], 2)
        if truncation is not None:
            mass = token_kept_log_mass(flat, module.weight, module.bias, temperature, *truncation, chunk=chunk)
            tap.kept_log_mass = mass.view(hidden.shape[:-1])
        return (hidden[..., :0, :],)  # the layer itself computes nothing

    def after(module, args, output):
        return tap.result

    handles = [head.register_forward_pre_hook(before), head.register_forward_hook(after)]
    try:
        yield tap
    finally:
        for handle in handles:
            handle.remove()


def _output_layer(model) -> nn.Linear | None:
    """The causal LM's output layer when it can be tapped: a plain linear layer whose output the
    model uses as its logits unchanged. None: compute the logits whole."""
    inner = _unwrapped(model)
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if get is not None else None
    if type(head) is not nn.Linear:
        return None
    config = getattr(inner, "config", None)
    if any(getattr(config, name, None) not in (None, 1.0) for name in LOGIT_POSTPROCESSING):
        return None
    return head


def _from_whole_logits(model, inputs: SequenceInputs, temperature: float, entropy: bool, entropy_grad: bool, with_hidden: bool, truncation) -> PolicyOutputs:
    from rlhand.core.losses import entropy_from_logits
    from rlhand.core.sampling import kept_log_mass

    logits, hidden = _causal_lm_forward(model, inputs, with_hidden=with_hidden)
    logits = logits.float() / temperature
    response_ids = inputs.input_ids[:, inputs.prompt_len :]
    mask = inputs.attention_mask[:, inputs.prompt_len :].bool()
    logprobs = token_logprobs(logits, response_ids).masked_fill(~mask, 0.0)
    entropies = None
    if entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropies = entropy_from_logits(logits).masked_fill(~mask, 0.0)
    kept_mass = kept_log_mass(logits.detach(), *truncation).masked_fill(~mask, 0.0) if truncation else None
    return PolicyOutputs(logprobs, entropies, hidden, kept_mass)


def response_logits(model: PreTrainedModel, inputs: SequenceInputs, temperature: float) -> Tensor:
    """(B, R, V) float32 logits / temperature at the positions that predict response tokens: the
    whole logits, for tests and small vocabularies (training and scoring use policy_forward)."""
    logits, _ = _causal_lm_forward(model, inputs)
    return logits.float() / temperature


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
    return _unpack(_score(critic, hidden), want[:, inputs.prompt_len - 1 : -1])


def sequence_scores(reward_model: PreTrainedModel, inputs: SequenceInputs, last_index: Tensor) -> Tensor:
    """(B,) reward-model score read at each response's last real token (`last_index` into R)."""
    at = torch.zeros_like(inputs.attention_mask, dtype=torch.bool)
    at[torch.arange(at.shape[0], device=at.device), inputs.prompt_len + last_index] = True
    return _score(reward_model, _hidden_states(reward_model, inputs, at))


def _score(model, hidden: Tensor) -> Tensor:
    """A sequence classifier's scalar head on hidden states, float32. The head may train in
    model.dtype on a base kept in frozen_dtype (LoRA): it takes the hidden states in its own dtype."""
    head = _unwrapped(model).score
    weight = getattr(head, "weight", None)
    return head(hidden if weight is None else hidden.to(weight.dtype)).squeeze(-1).float()
