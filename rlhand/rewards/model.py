"""A reward model scoring the (EOS-truncated) prompt + response at its last real token."""

import json
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedModel

from rlhand.core.kl import last_valid_index
from rlhand.errors import RewardError
from rlhand.models.forward import sequence_inputs, sequence_scores
from rlhand.models.scoring import rows_per_part

STATS_FILE = "score_stats.json"  # written by stage=reward_model beside its model


def read_score_stats(folder: str | None) -> tuple[float, float]:
    """(mean, std) of a reward model's scores, from the score_stats.json stage=reward_model saved."""
    if not folder:
        raise RewardError("reward.normalize=saved: needs model.reward_model, a folder stage=reward_model wrote")
    path = Path(folder) / STATS_FILE
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
        mean, std = float(stats["mean"]), float(stats["std"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RewardError(f"reward.normalize: {path} is missing or unreadable (stage=reward_model writes it); set reward.normalize=running or off") from None
    if not std > 0:
        raise RewardError(f"reward.normalize: {path} gives std {std}; the scores cannot be standardised")
    return mean, std


class ModelScorer:
    """`max_tokens`: tokens per scoring forward (trainer.score_max_tokens; None: the whole batch)."""

    def __init__(self, reward_model: PreTrainedModel, max_tokens: int | None = None):
        self.reward_model, self.max_tokens = reward_model, max_tokens

    @torch.no_grad()
    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor, rows=None) -> Tensor:
        """`rows` (each prompt's columns and label) are not a reward model's to read."""
        inputs = sequence_inputs(prompt_ids, prompt_mask, response_ids, response_mask)
        last = last_valid_index(response_mask)
        step = rows_per_part(len(last), inputs.input_ids.shape[1], self.max_tokens)
        parts = [sequence_scores(self.reward_model, inputs.rows(slice(i, i + step)), last[i : i + step]) for i in range(0, len(last), step)]
        return torch.cat(parts)
