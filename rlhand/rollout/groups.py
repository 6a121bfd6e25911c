"""Groups of responses to one prompt (generation.samples_per_prompt), and DAPO's dynamic sampling.

A rollout holds each prompt's group in consecutive rows; everything that picks rows (dynamic
sampling here, minibatches in rlhand/stages/ppo/update.py) picks whole groups.
"""

import torch
from torch import Tensor

from rlhand.core.estimators import informative_groups
from rlhand.core.masked import LOCAL, Reducer
from rlhand.rollout.batch import Rollout, concat_rollouts


def repeat_groups(indices: list[int], group_size: int) -> list[int]:
    """Each prompt index `group_size` times in a row: [a, b] -> [a, a, b, b]."""
    return [index for index in indices for _ in range(group_size)]


def select_groups(rollout: Rollout, keep: Tensor, group_size: int) -> Rollout | None:
    """The rows of the groups where `keep` (G,) is True, in order; None if there are none."""
    rows = torch.nonzero(keep.repeat_interleave(group_size)).squeeze(1)
    return rollout.select(rows) if len(rows) else None


class DynamicSampling:
    """DAPO's dynamic sampling (Yu et al. 2025), on one rank: keep the groups whose scores differ,
    sample again while fewer than the batch's groups are kept, then train on the first ones. After
    algo.dynamic_max_rounds rounds an incomplete batch is filled with dropped groups (they get
    advantage 0: no policy gradient, only their KL term), so every batch has the same shape.

    Filtered on the score (after the missing-EOS penalty), not on the KL-shaped return, which is
    never exactly equal across a group. Stats: dynamic/rounds (sampling rounds this iteration; every
    round generates algo.rollout_batch_size responses and samples/generated counts them all),
    dynamic/informative_frac (share of the groups sampled, in every round, whose scores differ),
    dynamic/filled_groups (groups of equal scores that filled the batch)."""

    def __init__(self, group_size: int, rows: int, pad_id: int):
        self.group_size, self.groups_needed, self.pad_id = group_size, rows // group_size, pad_id
        self.sampled: list[Rollout] = []
        self.kept: list[Rollout] = []
        self.dropped: list[Rollout] = []

    @property
    def filled(self) -> int:
        """Dropped groups the batch needs to be full."""
        return max(0, self.groups_needed - self._count(self.kept))

    def _count(self, parts: list[Rollout]) -> int:
        return sum(len(part) for part in parts) // self.group_size

    def add(self, rollout: Rollout) -> bool:
        """One round's rollout; True once enough informative groups are kept."""
        self.sampled.append(rollout)
        keep = informative_groups(rollout.scores, self.group_size)
        for part, chosen in ((self.kept, keep), (self.dropped, ~keep)):
            picked = select_groups(rollout, chosen, self.group_size)
            if picked is not None:
                part.append(picked)
        return self._count(self.kept) >= self.groups_needed

    def batch(self) -> Rollout:
        """The first groups_needed groups: kept ones first, then dropped ones to fill."""
        parts = self.kept + self.dropped
        whole = concat_rollouts(parts, self.pad_id) if len(parts) > 1 else parts[0]
        return whole.select(torch.arange(self.groups_needed * self.group_size, device=whole.response_ids.device))

    def stats(self, reducer: Reducer = LOCAL) -> dict[str, float]:
        figures = torch.tensor(
            [float(self._count(self.kept)), float(self._count(self.kept) + self._count(self.dropped)), float(self.filled)], dtype=torch.float64
        )
        figures = reducer.sum(figures)
        kept, total, filled = figures.tolist()
        return {"dynamic/rounds": len(self.sampled), "dynamic/informative_frac": kept / max(total, 1.0), "dynamic/filled_groups": filled}
