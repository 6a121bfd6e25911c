"""No-grad scoring forwards in micro-batches (trainer.score_max_tokens).

A rollout's scoring forwards (the reference's and proximal log-probs, the critic's values, the
reward model's scores, replayed rows' re-scoring, validation) run without grad, so nothing is kept
for a backward; but each one's activations are still those of the whole batch at once: at a real
model's width and a few hundred tokens per response that is gigabytes. Here a forward runs on at
most `max_tokens` tokens (rows x padded width) at a time, verl's log_prob_max_token_len, and the
rows' results are put back together in order. None runs the whole batch at once.
"""

from collections.abc import Callable

import torch

from rlhand.models.forward import SequenceInputs


def rows_per_part(rows: int, width: int, max_tokens: int | None) -> int:
    """How many rows of `width` tokens one scoring forward takes (at least one)."""
    if max_tokens is None:
        return rows
    return max(1, min(rows, max_tokens // max(width, 1)))


def in_parts(fn: Callable[[SequenceInputs], object], inputs: SequenceInputs, max_tokens: int | None):
    """fn(inputs), computed on consecutive row slices of at most `max_tokens` tokens each and
    concatenated along the rows; fn returns a tensor or a tuple of tensors (None entries allowed)."""
    rows = inputs.input_ids.shape[0]
    step = rows_per_part(rows, inputs.input_ids.shape[1], max_tokens)
    if step >= rows:
        return fn(inputs)
    parts = [fn(inputs.rows(slice(start, start + step))) for start in range(0, rows, step)]
    if isinstance(parts[0], tuple):
        return tuple(None if part[0] is None else torch.cat(list(part), dim=0) for part in zip(*parts))
    return torch.cat(parts, dim=0)
