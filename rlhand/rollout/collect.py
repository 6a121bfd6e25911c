"""Turn a batch of prompts into a scored Rollout: sample, then one no-grad forward per model."""

from collections.abc import Callable

import torch
from torch import Tensor

from rlhand.config.schema import GenerationConfig
from rlhand.models.build import Models
from rlhand.models.critic import rollout_values
from rlhand.models.forward import response_logits, sequence_inputs, token_logprobs
from rlhand.rollout.batch import Rollout
from rlhand.rollout.sampler import sample_responses


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
            value_head=models.critic.sampler_head(),
        )
    inputs = sequence_inputs(prompt_ids, prompt_mask, samples.response_ids, samples.response_mask)
    mask = samples.response_mask.bool()
    ref_logprobs = None
    if models.has_reference:
        with timer("score_ref"), models.reference() as ref:
            logits = response_logits(ref, inputs, gen.temperature)
            ref_logprobs = token_logprobs(logits, samples.response_ids).masked_fill(~mask, 0.0)
    with timer("score_value"):
        values = rollout_values(models.critic, inputs, samples.values).masked_fill(~mask, 0.0)
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
        behaviour_logprobs=samples.logprobs,
        proximal_logprobs=samples.logprobs,  # this iteration's own samples: pi_prox is pi_behaviour
        ref_logprobs=ref_logprobs,
        values=values,
        scores=scores,
        raw_scores=raw_scores,
        ended=samples.ended,
        fresh=torch.ones(len(samples.ended), dtype=torch.bool, device=prompt_ids.device),
    )
