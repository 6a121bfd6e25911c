"""stage=sft: supervised fine-tuning of the policy on demonstrations. The loss is the negative
log-likelihood of the trained tokens (sft.loss_on: the last assistant turn or the completion, every
assistant turn, or every token after the first; rlhand/data/demonstrations.py), per token over the
whole batch's trained tokens; forwards are padding-free and the output layer runs in chunks, as in
the RL stage (rlhand/models/forward.py). final/policy is what the RL stage takes:
model=hf model.policy=<run>/final/policy."""

import torch

from rlhand.core.supervised import sft_loss
from rlhand.data.demonstrations import Example, load_demonstrations
from rlhand.data.sampler import left_pad, right_pad
from rlhand.models.build import build_policy_only
from rlhand.models.forward import SequenceInputs, policy_forward, sequence_inputs
from rlhand.stages.supervised import SupervisedStage


class SFTStage(SupervisedStage):
    section, learner = "sft", "policy"

    @classmethod
    def load(cls, cfg, tokenizer, path, stop_ids):
        return load_demonstrations(cfg, tokenizer, path, stop_ids)

    @staticmethod
    def length(item: Example) -> int:
        return len(item.prompt_ids) + len(item.completion_ids)

    @staticmethod
    def scored_tokens(item: Example) -> int:
        return len(item.completion_ids)

    def build_model(self, cfg, tokenizer, device):
        return build_policy_only(cfg.model, tokenizer, device)

    def count(self, items: list[Example]) -> float:
        return float(sum(len(e.completion_ids) if e.trained is None else sum(e.trained) for e in items))

    def padded_tokens(self, items: list[Example]) -> int:
        return len(items) * (max(len(e.prompt_ids) for e in items) + max(len(e.completion_ids) for e in items))

    def inputs_of(self, batch: list[Example]) -> tuple[SequenceInputs, torch.Tensor]:
        """(prompts left-padded and completions right-padded, the trained tokens' mask (B, C))."""
        pad, device = self.inputs.tokenizer.pad_token_id, self.env.device
        prompt_ids, prompt_mask = left_pad([e.prompt_ids for e in batch], pad)
        ids, mask = right_pad([e.completion_ids for e in batch], pad)
        trained, _ = right_pad([e.trained or [1] * len(e.completion_ids) for e in batch], 0)
        inputs = sequence_inputs(prompt_ids.to(device), prompt_mask.to(device), ids.to(device), mask.to(device))
        return inputs, (mask * trained).bool().to(device)

    def token_logprobs(self, batch: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, trained = self.inputs_of(batch)
        return policy_forward(self.model, inputs, 1.0, chunk_bytes=self.chunk_bytes()).logprobs, trained

    def chunk_bytes(self) -> int | None:
        mb = self.cfg.trainer.logits_chunk_mb
        return None if mb is None else mb * 2**20

    def losses(self, batch, total):
        logprobs, mask = self.token_logprobs(batch)
        loss = sft_loss(logprobs, mask, total)
        return loss, {"nll": -(logprobs.detach().double() * mask).sum(), "tokens": mask.sum().double()}

    def from_sums(self, summed, keys):
        totals = dict(zip(keys, summed))
        loss = totals["nll"] / totals["tokens"]
        return {"loss": loss, "perplexity": loss.exp(), "tokens": totals["tokens"]}
