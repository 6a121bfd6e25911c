"""The critic of `model.critic_backbone=shared`: one scalar head on the policy's final hidden state.

The head owns only its weight, so the critic optimizer steps the head alone; the value loss still
reaches the backbone through the shared forward, where the policy optimizer steps it (the design of
TRL's older AutoModelForCausalLMWithValueHead). One forward per minibatch then serves both losses,
and the rollout reads V(s_t) from the sampler's own hidden states instead of a separate pass.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel

WEIGHTS_FILE = "value_head.safetensors"


class SharedValueHead(nn.Module):
    def __init__(self, policy: PreTrainedModel, hidden_size: int, dtype: torch.dtype):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1, bias=False, dtype=dtype)
        # Small init (OpenRLHF's std 1/(d+1)): values start near 0, like a fresh classification head.
        nn.init.normal_(self.score.weight, std=1.0 / (hidden_size + 1))
        # Kept outside _modules: the policy's parameters must not count as the critic's.
        self.__dict__["policy"] = policy

    @property
    def policy(self) -> PreTrainedModel:
        return self.__dict__["policy"]

    def rebind(self, policy: nn.Module) -> None:
        """The policy it sits on, after wrapping (LoRA)."""
        self.__dict__["policy"] = policy

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) final hidden states -> (...) float32 values. Call the module (not .score): a
        sharded head gathers its weight in the forward's hooks."""
        return self.score(hidden.to(self.score.weight.dtype)).squeeze(-1).float()  # a bf16 base (frozen_dtype under LoRA) feeds an fp32 head

    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        return self(hidden)

    def save_pretrained(self, folder: Path, state_dict: dict | None = None, **_) -> None:
        """The head's weight (`state_dict`, e.g. gathered from shards, or its own) and what it
        belongs to; load it back with rlhand.models.folders.load_weights."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights = state_dict if state_dict is not None else self.state_dict()
        save_file({name: t.detach().contiguous().cpu() for name, t in weights.items()}, folder / WEIGHTS_FILE)
        meta = {"critic_backbone": "shared", "hidden_size": self.score.in_features, "note": "a value head on the policy in ../policy"}
        (folder / "config.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
