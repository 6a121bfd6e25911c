"""Turn a batch of prompts into a scored Rollout: sample with the generation engine, then one
no-grad forward per model.

With an engine whose log-probs are not the trainer's own (vLLM: other kernels, other rounding),
the engine's log-probs are the behaviour policy's and one more policy forward gives the proximal
ones, as the trainer computes them (a shared value head reads its values from that same forward).
Every log-prob is under the tempered softmax over the whole vocabulary; an engine that reports
them under its top-k / top-p truncated distribution gets the kept mass added back
(rlhand/core/sampling.py). Each token's policy loss is then weighted by the truncated importance
ratio min(pi_prox / pi_behaviour, algo.is_truncation), token by token: decoupled PPO's
correction (rlhand/core/importance.py), as verl (token-level, 2.0) and TRL (3.0) correct theirs.
"""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rlhand.config.schema import GenerationConfig
from rlhand.core.importance import truncated_is_weights
from rlhand.core.sampling import truncates
from rlhand.data.prompts import Prompt
from rlhand.models.build import Models
from rlhand.models.critic import rollout_values
from rlhand.models.forward import policy_forward, sequence_inputs
from rlhand.models.scoring import in_parts
from rlhand.rollout.batch import Rollout
from rlhand.rollout.engines import GenerationEngine, HFEngine
from rlhand.rollout.rescoring import rescore


@torch.no_grad()
def collect_rollout(
    models: Models,
    scorer: Callable,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    gen: GenerationConfig,
    *,
    eos_ids: "int | Sequence[int]",
    pad_id: int,
    timer,
    generator: torch.Generator | None = None,
    engine: GenerationEngine | None = None,
    is_truncation: float | None = 2.0,
    rows: "list[Prompt] | None" = None,
    source_rows: Tensor | None = None,
) -> Rollout:
    """`rows`: each row's prompt as read (its conversation, columns and label), which the scorer
    receives; `source_rows`: each row's index among the run's prompts, kept with the sample."""
    engine = engine or HFEngine(models)
    with timer("generate"):
        samples = engine.generate(prompt_ids, prompt_mask, gen, eos_ids=eos_ids, pad_id=pad_id, generator=generator)
    inputs = sequence_inputs(prompt_ids, prompt_mask, samples.response_ids, samples.response_mask)
    mask = samples.response_mask.bool()
    limits = models.limits
    if engine.exact:  # the engine's log-probs are the trainer's: pi_prox is pi_behaviour, the same tensor
        behaviour, proximal, sampled_values, policy_weights = samples.logprobs, samples.logprobs, samples.values, None
    else:
        with timer("score_policy"):
            behaviour, proximal, sampled_values = engine_correction(models, engine, samples, inputs, gen)
        policy_weights = truncated_is_weights(proximal, behaviour, is_truncation) * mask
    ref_logprobs = None
    if models.has_reference:
        with timer("score_ref"), models.reference() as ref:
            ref_logprobs = in_parts(
                lambda part: policy_forward(ref, part, gen.temperature, chunk_bytes=limits.logit_chunk_bytes).logprobs, inputs, limits.score_max_tokens
            ).masked_fill(~mask, 0.0)
    with timer("score_value"):
        values = rollout_values(models.critic, inputs, sampled_values, limits.score_max_tokens).masked_fill(~mask, 0.0)
    with timer("score_reward"):
        raw_scores = scorer(prompt_ids, prompt_mask, samples.response_ids, samples.response_mask, samples.ended, rows=rows)
    scores = raw_scores
    if gen.missing_eos_penalty is not None:
        scores = raw_scores - gen.missing_eos_penalty * (~samples.ended).float()
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=samples.response_ids,
        response_mask=samples.response_mask,
        behaviour_logprobs=behaviour,
        proximal_logprobs=proximal,
        ref_logprobs=ref_logprobs,
        values=values,
        scores=scores,
        raw_scores=raw_scores,
        ended=samples.ended,
        fresh=torch.ones(len(samples.ended), dtype=torch.bool, device=prompt_ids.device),
        policy_weights=policy_weights,
        source_row=source_rows,
    )


def engine_correction(models: Models, engine: GenerationEngine, samples, inputs, gen: GenerationConfig) -> tuple[Tensor, Tensor, Tensor | None]:
    """For an engine whose log-probs are not the trainer's: (behaviour, proximal, values). The
    proximal log-probs come from one trainer forward; an engine reporting log-probs under the
    truncated distribution it drew from gets the log of the mass top-k / top-p kept added back
    (rlhand/core/sampling.py); a shared value head reads its values from the same forward."""
    truncated = getattr(engine, "truncated_logprobs", False) and truncates(gen.top_k, gen.top_p)
    shared = models.critic.reads_policy_hidden
    now = rescore(models, inputs, gen.temperature, values=shared, truncation=(gen.top_k, gen.top_p) if truncated else None)
    behaviour = samples.logprobs
    if now.kept_log_mass is not None:
        behaviour = (behaviour + now.kept_log_mass).masked_fill(~samples.response_mask.bool(), 0.0)
    return behaviour, now.proximal, now.values if shared else samples.values
