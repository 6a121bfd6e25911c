"""Micro-batches: consecutive items in parts of at most `max_items` items and `max_tokens` padded
tokens each (None: no limit). An item alone over the token budget is a part of its own: it cannot
be split, and the memory estimate says whether it fits."""

from collections.abc import Callable


def micro_batches(items: list, max_items: int | None, max_tokens: int | None, padded_tokens: Callable[[list], int]) -> list[list]:
    parts, current = [], []
    for item in items:
        trial = current + [item]
        if current and ((max_items is not None and len(trial) > max_items) or (max_tokens is not None and padded_tokens(trial) > max_tokens)):
            parts.append(current)
            trial = [item]
        current = trial
    if current:
        parts.append(current)
    return parts
