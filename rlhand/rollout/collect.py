"""Turn a batch of prompts into a scored Rollout: sample, then one no-grad forward per model."""

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from rlhand.config.schema import GenerationConfig
from rlhand.models.build import Models
from rlhand.models.forward import response_logits, sequence_inputs, token_logprobs, token_values
from rlhand.models.value_head import SharedValueHead
from rlhand.rollout.sampler import sample_responses


@dataclass
class Rollout:
    """One iteration's experience. Per-token tensors are (B, R); per-sequence ones (B,)."""

    prompt_ids: Tensor  # (B, P) left-padded
    prompt_mask: Tensor  # (B, P)
    response_ids: Tensor  # (B, R)
    response_mask: Tensor  # (B, R) 1 up to and including EOS
    logprobs: Tensor  # (B, R) behaviour log-probs, as sampled
    ref_logprobs: Tensor | None  # (B, R) frozen reference; None without a reference model
    values: Tensor  # (B, R) critic V(s_t) at rollout time
    scores: Tensor  # (B,) task score after the missing-EOS penalty
    raw_scores: Tensor  # (B,) task score as the scorer gave it
    ended: Tensor  # (B,) response emitted EOS
    # Filled by the algorithm before the update:
    rewards: Tensor | None = None  # (B, R)
    advantages: Tensor | None = None  # (B, R)
    returns: Tensor | None = None  # (B, R)
    # Replay only (None otherwise): detached loss weights, PER x truncated IS per token for the
    # policy loss, PER per sequence for the value loss. `logprobs` then holds the proximal policy.
    policy_weights: Tensor | None = None  # (B, R)
    value_weights: Tensor | None = None  # (B,)

    def select(self, index: Tensor) -> "Rollout":
        """The rows in `index`, trimmed to the longest response among them."""
        width = int(self.response_mask[index].sum(dim=1).max())
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                picked[f.name] = None
                continue
            value = value[index]
            picked[f.name] = value[:, :width] if value.dim() == 2 and not f.name.startswith("prompt") else value
        return Rollout(**picked)

    def split(self, parts: int) -> list["Rollout"]:
        """`parts` consecutive, equal-sized row slices (micro-batches for gradient accumulation)."""
        rows = torch.arange(len(self), device=self.response_ids.device)
        return [self.select(chunk) for chunk in rows.chunk(parts)]

    def __len__(self) -> int:
        return self.response_ids.shape[0]


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts row-wise: prompts re-left-padded, per-token tensors right-padded (masked out)."""
    prompt_width = max(part.prompt_ids.shape[1] for part in parts)
    response_width = max(part.response_ids.shape[1] for part in parts)
    out = {}
    for f in fields(Rollout):
        values = [getattr(part, f.name) for part in parts]
        if any(v is None for v in values):
            if not all(v is None for v in values):
                raise ValueError(f"concat_rollouts: {f.name} is set in some parts only")
            out[f.name] = None
            continue
        if f.name.startswith("prompt"):
            fill = pad_id if f.name == "prompt_ids" else 0
            values = [torch.nn.functional.pad(v, (prompt_width - v.shape[1], 0), value=fill) for v in values]
        elif values[0].dim() == 2:
            fill = pad_id if f.name == "response_ids" else 0
            values = [torch.nn.functional.pad(v, (0, response_width - v.shape[1]), value=fill) for v in values]
        out[f.name] = torch.cat(values, dim=0)
    return Rollout(**out)


@torch.no_grad()
def collect_rollout(
    models: Models,
    scorer: Callable,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    gen: GenerationConfig,
    *,
    eos_id: int,
    pad_id: int,
    timer,
    generator: torch.Generator | None = None,
) -> Rollout:
    shared_critic = isinstance(models.critic, SharedValueHead)
    with timer("generate"):
        samples = sample_responses(
            models.policy,
            prompt_ids,
            prompt_mask,
            max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature,
            top_k=gen.top_k,
            top_p=gen.top_p,
            eos_id=eos_id,
            pad_id=pad_id,
            generator=generator,
            value_head=models.critic if shared_critic else None,
        )
    inputs = sequence_inputs(prompt_ids, prompt_mask, samples.response_ids, samples.response_mask)
    mask = samples.response_mask.bool()
    ref_logprobs = None
    if models.ref is not None:
        with timer("score_ref"):
            logits = response_logits(models.ref, inputs, gen.temperature)
            ref_logprobs = token_logprobs(logits, samples.response_ids).masked_fill(~mask, 0.0)
    with timer("score_value"):
        values = samples.values if shared_critic else token_values(models.critic, inputs)
        values = values.masked_fill(~mask, 0.0)
    with timer("score_reward"):
        raw_scores = scorer(prompt_ids, prompt_mask, samples.response_ids, samples.response_mask, samples.ended)
    scores = raw_scores
    if gen.missing_eos_penalty is not None:
        scores = raw_scores - gen.missing_eos_penalty * (~samples.ended).float()
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=samples.response_ids,
        response_mask=samples.response_mask,
        logprobs=samples.logprobs,
        ref_logprobs=ref_logprobs,
        values=values,
        scores=scores,
        raw_scores=raw_scores,
        ended=samples.ended,
    )
