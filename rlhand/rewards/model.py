"""A reward model scoring the (EOS-truncated) prompt + response at its last real token."""

import torch
from torch import Tensor
from transformers import PreTrainedModel

from rlhand.core.kl import last_valid_index
from rlhand.models.forward import sequence_inputs, sequence_scores


class ModelScorer:
    def __init__(self, reward_model: PreTrainedModel):
        self.reward_model = reward_model

    @torch.no_grad()
    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor) -> Tensor:
        inputs = sequence_inputs(prompt_ids, prompt_mask, response_ids, response_mask)
        return sequence_scores(self.reward_model, inputs, last_valid_index(response_mask))
