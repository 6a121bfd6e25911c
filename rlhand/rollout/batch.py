"""The batch contract between rollout, replay, advantages and the update.

A Rollout is immutable: each stage returns a new one (`dataclasses.replace`), so no stage changes
what an earlier one meant. Two log-prob fields are kept apart, because decoupled PPO needs both:

- `behaviour_logprobs`: log pi_behaviour(token), the policy that sampled it, as it sampled it.
  Never changed; the replay buffer stores it.
- `proximal_logprobs`: log pi_prox(token), the policy the PPO ratio is anchored to (the weights at
  the start of this iteration). For this iteration's own samples pi_prox is pi_behaviour, and the
  field holds the very same tensor; for replayed samples it is recomputed (rlhand/replay/mixer.py).

`fresh` marks this iteration's samples row by row (the KL controller and the KL/reward metrics see
those only; replay stores those only); it survives shuffling and minibatch selection.
"""

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class Rollout:
    """A batch of (prompt, response) samples. Per-token tensors are (B, R); per-sequence ones (B,)."""

    prompt_ids: Tensor  # (B, P) left-padded
    prompt_mask: Tensor  # (B, P)
    response_ids: Tensor  # (B, R)
    response_mask: Tensor  # (B, R) 1 up to and including EOS
    behaviour_logprobs: Tensor  # (B, R) as sampled; 0 outside the mask
    proximal_logprobs: Tensor  # (B, R) the PPO ratio's anchor (the same tensor as behaviour_logprobs for fresh rows)
    ref_logprobs: Tensor | None  # (B, R) frozen reference; None without a reference model
    values: Tensor  # (B, R) V(s_t) of the critic the iteration started with (rollout time, or recomputed for replayed rows)
    scores: Tensor  # (B,) task score after the missing-EOS penalty
    raw_scores: Tensor  # (B,) task score as the scorer gave it
    ended: Tensor  # (B,) response emitted EOS
    fresh: Tensor  # (B,) bool: sampled in this iteration (False: replayed)
    # From the advantage stage (rlhand/stages/ppo/advantages.py), None before it:
    rewards: Tensor | None = None  # (B, R) KL-shaped token rewards
    advantages: Tensor | None = None  # (B, R) whitened when algo.whiten_advantages
    returns: Tensor | None = None  # (B, R) raw advantages + values
    # Replay only, None otherwise: detached loss weights (PER x truncated IS per token for the policy
    # loss, PER per sequence for the value loss).
    policy_weights: Tensor | None = None  # (B, R)
    value_weights: Tensor | None = None  # (B,)
    # Replay only: the raw advantages a row was given when fresh (a group estimator's replayed rows
    # keep them: rlhand/stages/ppo/advantages.py); 0 on fresh rows.
    stored_advantages: Tensor | None = None  # (B, R)
    # Each sample's prompt row: its index among the run's training prompts (data/prompts.Prompt:
    # conversation, columns, label), kept through groups, shuffling and replay; None where untracked.
    source_row: Tensor | None = None  # (B,) long

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    @property
    def num_fresh(self) -> int:
        return int(self.fresh.sum())

    def replace(self, **changes) -> "Rollout":
        return replace(self, **changes)

    def select(self, index: Tensor) -> "Rollout":
        """The rows in `index`, per-token tensors trimmed to the longest response among them."""
        width = int(self.response_mask[index].sum(dim=1).max())
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                value = value[index]
                if value.dim() == 2 and not f.name.startswith("prompt"):
                    value = value[:, :width]
            picked[f.name] = value
        return Rollout(**picked)

    def split(self, parts: int) -> list["Rollout"]:
        """`parts` consecutive, equal-sized row slices (micro-batches for gradient accumulation)."""
        rows = torch.arange(len(self), device=self.response_ids.device)
        return [self.select(chunk) for chunk in rows.chunk(parts)]

    def only_fresh(self) -> "Rollout":
        return self.select(torch.nonzero(self.fresh).squeeze(1))

    def to(self, device: torch.device) -> "Rollout":
        return Rollout(**{f.name: _moved(getattr(self, f.name), device) for f in fields(self)})


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts row-wise: prompts re-left-padded, per-token tensors right-padded (masked out)."""
    prompt_width = max(part.prompt_ids.shape[1] for part in parts)
    response_width = max(part.response_ids.shape[1] for part in parts)
    out = {}
    for f in fields(Rollout):
        values = [getattr(part, f.name) for part in parts]
        if f.name == "source_row" and any(v is not None for v in values):  # untracked rows (-1) beside tracked ones
            values = [v if v is not None else torch.full((len(part),), -1, dtype=torch.long, device=part.response_ids.device) for v, part in zip(values, parts)]
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


def _moved(value, device):
    return value.to(device) if isinstance(value, Tensor) else value
