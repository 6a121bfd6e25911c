"""reward.normalize and reward.clip on the run's reward: standardised by a reward model's saved
statistics (`saved`: the score_stats.json stage=reward_model writes) or by the running mean and std
of every score so far, this batch's included (`running`, TRL's use_score_scaling; every rank's scores,
resumed from the checkpoint), then clipped to [-clip, clip] when reward.clip is set.
Validation scores with the statistics as they stand and does not add to them, so switching it on or
off leaves training unchanged."""

from contextlib import contextmanager

import torch
from torch import Tensor

from rlhand.core.masked import LOCAL, Reducer, mean
from rlhand.core.running import RunningMoments

MIN_STD = 1e-6  # under it (fewer than two scores, or all equal) scores are centred, not scaled


class NormalizedScorer:
    def __init__(
        self,
        inner,
        saved: tuple[float, float] | None = None,
        running: bool = False,
        clip: float | None = None,
        reducer: Reducer = LOCAL,
    ):
        self.inner, self.saved, self.clip, self.reducer = inner, saved, clip, reducer
        self.moments = RunningMoments() if running else None
        self.learning = True
        self.seen: list[Tensor] = []  # the raw scores since the last unnormalized_mean()

    @property
    def changes_scores(self) -> bool:
        return self.saved is not None or self.moments is not None or self.clip is not None

    def __call__(
        self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor, rows=None
    ) -> Tensor:
        scores = self.inner(prompt_ids, prompt_mask, response_ids, response_mask, ended, rows=rows).float()
        if self.learning and self.changes_scores:
            self.seen.append(scores)
        if self.saved is not None:
            scores = (scores - self.saved[0]) / self.saved[1]
        elif self.moments is not None:
            if self.learning:
                self.moments.update(scores, self.reducer)
            std = self.moments.std
            scores = (scores - self.moments.mean) / (std if std > MIN_STD else 1.0)
        if self.clip is not None:
            scores = scores.clamp(-self.clip, self.clip)
        return scores

    def unnormalized_mean(self, reducer: Reducer = LOCAL) -> dict[str, float]:
        """reward/unnormalized: the mean score before normalising and clipping, over every batch (and rank)
        since the last call; nothing when the scores are used as they are."""
        out = {"reward/unnormalized": mean(torch.cat(self.seen), reducer).item()} if self.seen else {}
        self.seen = []
        return out

    @contextmanager
    def frozen(self):
        """Score without adding to the running statistics (validation)."""
        self.learning = False
        try:
            yield
        finally:
            self.learning = True

    def state_dict(self) -> dict:
        return {"moments": self.moments.state_dict()} if self.moments is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.moments is not None and state.get("moments"):
            self.moments.load_state_dict(state["moments"])
