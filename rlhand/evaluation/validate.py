"""Validation: sample the held-out prompts with the current policy and report val/* metrics.

Each validation draws its samples from a private generator re-seeded with the same seed, so two
validations differ only because the policy changed (common random numbers), and training's own
random stream is untouched: switching validation on or off leaves the training run identical.
"""

import torch

from rlhand.config.schema import GenerationConfig
from rlhand.core.kl import KLEstimator, kl_estimate
from rlhand.core.masked import LOCAL, Reducer, masked_mean, masked_sum, mean
from rlhand.data.sampler import left_pad
from rlhand.models.build import Models
from rlhand.models.forward import policy_forward, sequence_inputs
from rlhand.models.scoring import in_parts
from rlhand.rollout.collect import collect_rollout


@torch.no_grad()
def validate(
    models: Models,
    scorer,
    prompts: list[list[int]],
    gen: GenerationConfig,
    *,
    batch_size: int,
    eos_ids,
    pad_id: int,
    seed: int,
    device: torch.device,
    timer,
    reducer: Reducer = LOCAL,
    engine=None,
    scorers: dict | None = None,
    samples: list | None = None,
    rows: list | None = None,
) -> dict[str, float]:
    """val/* over every rank's `prompts` (each rank validates its share of them); each of `scorers`
    (name -> a scorer) also scores every response, as val/reward_<name>. `samples`: a list to which
    the first rows of the first batch are appended as they were scored (the caller sets its length;
    ids, the response up to its mask, and each score). `rows`: each prompt as read (its conversation,
    columns and label: what scorers receive), parallel to `prompts`."""
    scorers = scorers or {}
    extra: dict[str, list] = {name: [] for name in scorers}
    generator = torch.Generator(device=device).manual_seed(seed)
    scores, kls, entropies, lengths = [], [], [], []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start : start + batch_size], pad_id)
        batch_rows = rows[start : start + batch_size] if rows is not None else None
        rollout = collect_rollout(
            models, scorer, ids.to(device), mask.to(device), gen, eos_ids=eos_ids, pad_id=pad_id, timer=timer, generator=generator, engine=engine, rows=batch_rows
        )
        response_mask = rollout.response_mask
        scores.append(rollout.scores)
        for name, scorer_of_name in scorers.items():
            extra[name].append(scorer_of_name(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, response_mask, rollout.ended, rows=batch_rows))
        if samples is not None and start == 0:
            samples += readable_rows(rollout, {n: parts[-1] for n, parts in extra.items()})
        lengths.append(response_mask.sum(dim=1).float())
        if rollout.ref_logprobs is not None:
            kl = kl_estimate(rollout.proximal_logprobs, rollout.ref_logprobs, KLEstimator.k1)  # the policy's own log-probs
            kls.append(masked_sum(kl, response_mask, dim=1))
        with timer("validate_entropy"):
            # Weighted by token count so the batches combine into one per-token mean.
            entropies.append(masked_mean(response_entropy(models, rollout, gen.temperature), response_mask) * response_mask.sum())
    total_tokens = torch.cat(lengths).sum()
    entropy_sum = torch.stack(entropies).sum()
    entropy_sum, total_tokens = reducer.sum(torch.stack([entropy_sum, total_tokens]))
    out = {
        "val/reward": mean(torch.cat(scores), reducer).item(),
        "val/entropy": (entropy_sum / total_tokens).item(),
        "val/response_length": mean(torch.cat(lengths), reducer).item(),
    }
    for name, parts in extra.items():
        out[f"val/reward_{name}"] = mean(torch.cat(parts), reducer).item()
    if kls:
        out["val/kl"] = mean(torch.cat(kls), reducer).item()
    return out


def response_entropy(models: Models, rollout, temperature: float) -> torch.Tensor:
    """(B, R) the policy's entropy at each response position."""
    inputs = sequence_inputs(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask)
    limits = models.limits
    return in_parts(
        lambda part: policy_forward(models.policy, part, temperature, entropy=True, chunk_bytes=limits.logit_chunk_bytes).entropy,
        inputs,
        limits.score_max_tokens,
    )


def readable_rows(rollout, extra: dict[str, torch.Tensor]) -> list[dict]:
    """Each row's prompt and response ids (to the response's mask) and its scores."""
    return [
        {
            "prompt_ids": rollout.prompt_ids[row][rollout.prompt_mask[row].bool()].tolist(),
            "response_ids": rollout.response_ids[row][rollout.response_mask[row].bool()].tolist(),
            "scores": {"reward": rollout.scores[row].item(), **{f"reward_{n}": scores[row].item() for n, scores in extra.items()}},
        }
        for row in range(len(rollout.scores))
    ]
