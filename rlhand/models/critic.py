"""The critic interface: what the trainer needs from a value function, whatever it is made of.

- SeparateCritic: a *ForSequenceClassification model of its own, its score head read at every
  response token (TRL's PPOTrainer, OpenRLHF, verl). It has its own forward, so its update can run
  beside the policy's (rlhand/models/concurrent.py).
- SharedHeadCritic (model.critic_backbone=shared): a scalar head on the policy's final hidden
  state. Its values come out of the policy's own forward (and out of the sampler at rollout).
- NoCritic: estimators without a value function (algo.estimator=grpo, rloo, ...). Nothing is built,
  trained, checkpointed, saved or logged; its values are 0, so a raw advantage is still
  returns - values everywhere (replay priorities, the buffer).

`module` is what the critic's learner trains, checkpoints and saves. Callers ask the critic for
values and never look at which kind it is.
"""

from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhand.models.folders import save_trained_model
from rlhand.models.forward import PolicyOutputs, SequenceInputs, policy_forward, token_values
from rlhand.models.value_head import SharedValueHead


class Critic:
    module: nn.Module
    # True: values() needs the policy forward's final hidden states (one forward serves both).
    reads_policy_hidden: bool = False
    # The one answer to "is there a critic?": a value model to shard, train, checkpoint, save and
    # log. False for NoCritic (a critic-free estimator).
    trained: bool = True

    def values(self, inputs: SequenceInputs, policy_hidden: Tensor | None = None) -> Tensor:
        """(B, R) float32 V(s_t) at the positions that predict each response token."""
        raise NotImplementedError

    def sampler_head(self) -> SharedValueHead | None:
        """A head the sampler applies to its own hidden states, or None (values come from a forward)."""
        return None

    def save(self, folder: Path, tokenizer: PreTrainedTokenizerBase, state_dict: dict) -> None:
        """A folder of the critic's weights `state_dict` (whole, gathered from any shards)."""
        raise NotImplementedError


class SeparateCritic(Critic):
    def __init__(self, model: PreTrainedModel):
        self.module = model

    def values(self, inputs: SequenceInputs, policy_hidden: Tensor | None = None) -> Tensor:
        return token_values(self.module, inputs)

    def save(self, folder: Path, tokenizer: PreTrainedTokenizerBase, state_dict: dict) -> None:
        save_trained_model(self.module, folder, state_dict, tokenizer)


class SharedHeadCritic(Critic):
    reads_policy_hidden = True

    def __init__(self, head: SharedValueHead):
        self.module = head

    def values(self, inputs: SequenceInputs, policy_hidden: Tensor | None = None) -> Tensor:
        if policy_hidden is None:
            raise ValueError("a shared-head critic reads the policy forward's hidden states")
        return self.module.values(policy_hidden)

    def sampler_head(self) -> SharedValueHead:
        return self.module

    def save(self, folder: Path, tokenizer: PreTrainedTokenizerBase, state_dict: dict) -> None:
        self.module.save_pretrained(folder, state_dict=state_dict)  # the head alone: no model to load on its own


class NoCritic(Critic):
    module = None
    trained = False

    def values(self, inputs: SequenceInputs, policy_hidden: Tensor | None = None) -> Tensor:
        rows, width = inputs.input_ids.shape[0], inputs.input_ids.shape[1] - inputs.prompt_len
        return torch.zeros(rows, width, dtype=torch.float32, device=inputs.input_ids.device)

    def save(self, folder: Path, tokenizer: PreTrainedTokenizerBase, state_dict: dict) -> None:
        raise RuntimeError("there is no critic to save")


def policy_and_values(
    policy: PreTrainedModel, critic: Critic, inputs: SequenceInputs, temperature: float, *, entropy: bool = False, chunk_bytes: int | None = None
) -> tuple[PolicyOutputs, Tensor]:
    """The policy's outputs (log-probs of the response tokens, entropies when asked) and (B, R)
    values: two forwards with a critic of its own, one with a shared head."""
    out = policy_forward(policy, inputs, temperature, entropy=entropy, with_hidden=critic.reads_policy_hidden, chunk_bytes=chunk_bytes)
    return out, critic.values(inputs, out.hidden)


@torch.no_grad()
def rollout_values(critic: Critic, inputs: SequenceInputs, sampled: Tensor | None, max_tokens: int | None = None) -> Tensor:
    """The values of a fresh rollout: read by the sampler (a shared head) or forwards of the critic,
    `max_tokens` at a time (rlhand/models/scoring.py)."""
    from rlhand.models.scoring import in_parts

    return sampled if sampled is not None else in_parts(critic.values, inputs, max_tokens)
