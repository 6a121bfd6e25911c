"""The current policy's log-probs of tokens it did not sample itself, with the trainer's own
forward: the proximal log-probs that anchor the PPO ratio, for a rollout from an engine with other
kernels (vLLM) and for replayed samples. One place computes them, one setting truncates the
importance weight that corrects for the behaviour policy (algo.is_truncation)."""

from dataclasses import dataclass

import torch
from torch import Tensor

from rlhand.models.build import Models
from rlhand.models.forward import SequenceInputs, policy_forward
from rlhand.models.scoring import in_parts


@dataclass
class Rescored:
    proximal: Tensor  # (B, R) log pi_prox(token), 0 at padding
    values: Tensor | None  # (B, R) the critic's values, when asked for (0 at padding)
    kept_log_mass: Tensor | None  # (B, R) log of the mass top-k / top-p keep, when asked for


@torch.no_grad()
def rescore(models: Models, inputs: SequenceInputs, temperature: float, *, values: bool, truncation: tuple[int, float] | None = None) -> Rescored:
    """One no-grad policy forward per scoring micro-batch (trainer.score_max_tokens): its log-probs of
    the response tokens, and with `values` the critic's (a shared head reads the same forward, a
    critic of its own runs its own); `truncation` (top_k, top_p): the log of the mass they keep."""
    limits, critic = models.limits, models.critic
    mask = inputs.attention_mask[:, inputs.prompt_len :].bool()

    def score(part: SequenceInputs):
        out = policy_forward(
            models.policy, part, temperature, with_hidden=critic.reads_policy_hidden, chunk_bytes=limits.logit_chunk_bytes, truncation=truncation
        )
        return out.logprobs, critic.values(part, out.hidden) if values else None, out.kept_log_mass

    proximal, value, kept = in_parts(score, inputs, limits.score_max_tokens)
    return Rescored(proximal.masked_fill(~mask, 0.0), None if value is None else value.masked_fill(~mask, 0.0), kept)
