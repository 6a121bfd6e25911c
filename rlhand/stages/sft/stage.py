"""stage=sft: supervised fine-tuning of the policy on demonstrations. The loss is the negative
log-likelihood of the completion's tokens given the prompt (sft.loss_on=all: of every token after
the first), per token over all ranks' tokens; forwards are padding-free and the output layer runs
in chunks, as in the RL stage (rlhand/models/forward.py). final/policy is what the RL stage takes:
model=hf model.policy=<run>/final/policy."""


import torch

from rlhand.config.stages import LossOn
from rlhand.core.supervised import sft_loss
from rlhand.data.demonstrations import Example, load_demonstrations
from rlhand.data.sampler import left_pad, right_pad
from rlhand.models.build import build_policy_only
from rlhand.models.forward import SequenceInputs, policy_forward, sequence_inputs
from rlhand.stages.supervised import SupervisedStage


class SFTStage(SupervisedStage):
    section, learner = "sft", "policy"

    @classmethod
    def load(cls, cfg, tokenizer, path):
        return load_demonstrations(cfg, tokenizer, path)

    @staticmethod
    def length(item: Example) -> int:
        return len(item.prompt_ids) + len(item.completion_ids)

    @staticmethod
    def scored_tokens(item: Example) -> int:
        return len(item.prompt_ids) + len(item.completion_ids)  # at most, with sft.loss_on=all

    def build_model(self, cfg, tokenizer, device):
        return build_policy_only(cfg.model, tokenizer, device)

    def inputs_of(self, batch: list[Example]) -> SequenceInputs:
        """Prompts left-padded, completions right-padded; with loss_on=all the first token alone is
        the prompt and everything after it is trained."""
        pairs = [(e.prompt_ids, e.completion_ids) for e in batch]
        if self.settings.loss_on is LossOn.all:
            pairs = [(p[:1], p[1:] + c) for p, c in pairs]
        pad = self.inputs.tokenizer.pad_token_id
        prompt_ids, prompt_mask = left_pad([p for p, _ in pairs], pad)
        ids, mask = right_pad([c for _, c in pairs], pad)
        device = self.env.device
        return sequence_inputs(prompt_ids.to(device), prompt_mask.to(device), ids.to(device), mask.to(device))

    def token_logprobs(self, batch: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.inputs_of(batch)
        mask = inputs.attention_mask[:, inputs.prompt_len :].bool()
        return policy_forward(self.model, inputs, 1.0, chunk_bytes=self.chunk_bytes()).logprobs, mask

    def chunk_bytes(self) -> int | None:
        mb = self.cfg.trainer.logits_chunk_mb
        return None if mb is None else mb * 2**20

    def losses(self, batch):
        logprobs, mask = self.token_logprobs(batch)
        tokens = self.dist.sum(mask.sum().double())
        loss = sft_loss(logprobs, mask, tokens)
        total = self.dist.sum(loss.detach().double())
        return loss, {"loss": total, "perplexity": total.exp(), "tokens": tokens}

    def sums(self, batch):
        logprobs, mask = self.token_logprobs(batch)
        return {"nll": -(logprobs.double() * mask).sum(), "tokens": mask.sum().double()}

    def from_sums(self, summed, keys):
        totals = dict(zip(keys, summed))
        loss = totals["nll"] / totals["tokens"]
        return {"loss": loss, "perplexity": loss.exp()}
