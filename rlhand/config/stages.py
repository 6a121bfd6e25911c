"""Which stage a run trains, and the settings of the two supervised stages (stage=sft,
stage=reward_model). The RL stage's settings are the algo, replay, generation and reward groups."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

from rlhand.config.checks import check, check_mixture


class StageKind(str, Enum):
    ppo = "ppo"  # RL: PPO (or a critic-free estimator) against a reward, near a frozen reference
    sft = "sft"  # supervised fine-tuning on demonstrations
    reward_model = "reward_model"  # a Bradley-Terry reward model on preference pairs


class LossOn(str, Enum):
    completion = "completion"  # the loss over the completion's tokens only (the prompt conditions)
    all = "all"  # every token after the first, prompt included


@dataclass
class SFTConfig:
    # Demonstrations: JSONL, CSV, Parquet or a saved `datasets` folder with prompt + completion
    # columns, or a messages column (chat turns; the last is the assistant's completion, the rest
    # go through the tokenizer's chat template). null: the built-in task's demonstrations (letters).
    path: Optional[str] = None
    # Held-out demonstrations in their own file; null holds eval.num_prompts out of `path`'s.
    val_path: Optional[str] = None
    # Several files mixed by weight instead of `path`: name -> {path: ..., weight: ...}.
    mixture: Dict[str, Any] = field(default_factory=dict)
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    messages_column: str = "messages"
    loss_on: LossOn = LossOn.completion
    # Prompt tokens kept; a longer prompt is an error naming its line (never silently cut).
    max_prompt_tokens: int = 256
    # Demonstrations per optimizer step (over all ranks).
    batch_size: int = 16
    lr: float = 1.0e-3
    # Completion tokens kept (the EOS included); a longer completion is an error naming its line.
    max_completion_tokens: int = 64
    # Built-in demonstrations: how many, and the share of completion letters taken from the prompt
    # (1.0: perfect demonstrations, leaving RL nothing to improve on the gold score).
    num_examples: int = 2048
    demo_quality: float = 0.7

    def __post_init__(self) -> None:
        check_mixture(self.mixture, "sft", self.path)
        check(self.batch_size > 0, "sft.batch_size", "must be > 0")
        check(self.lr > 0, "sft.lr", "must be > 0")
        check(self.max_completion_tokens > 0 and self.max_prompt_tokens > 0, "sft.max_completion_tokens", "and sft.max_prompt_tokens must be > 0")
        check(self.num_examples > 0, "sft.num_examples", "must be > 0")
        check(0.0 <= self.demo_quality <= 1.0, "sft.demo_quality", "must be in [0, 1]")


@dataclass
class RewardModelConfig:
    # Preference pairs: JSONL, CSV, Parquet or a saved `datasets` folder with chosen and rejected
    # columns (texts, or chat message lists), and a prompt column when they share a prompt (leave
    # prompt_column null for whole texts). null: the built-in task's pairs, labelled by its reward.
    path: Optional[str] = None
    val_path: Optional[str] = None
    # Several files mixed by weight instead of `path`: name -> {path: ..., weight: ...}.
    mixture: Dict[str, Any] = field(default_factory=dict)
    prompt_column: Optional[str] = "prompt"
    chosen_column: str = "chosen"
    rejected_column: str = "rejected"
    # A per-pair margin column (Llama 2's): the loss is -log sigmoid(r_chosen - r_rejected - margin).
    margin_column: Optional[str] = None
    # Weight of the centring term mean((r_chosen + r_rejected)^2) that keeps scores near 0 (TRL's
    # center_rewards_coefficient; Eisenstein et al. 2023 use 0.01). 0: off.
    center_coef: float = 0.0
    # Prompt tokens kept; a longer prompt is an error naming its line (never silently cut).
    max_prompt_tokens: int = 256
    # Pairs per optimizer step (over all ranks).
    batch_size: int = 16
    lr: float = 1.0e-3
    max_completion_tokens: int = 64
    # Built-in pairs: how many, and the share whose label the gold scorer's is flipped in.
    num_pairs: int = 2048
    label_noise: float = 0.1

    def __post_init__(self) -> None:
        check_mixture(self.mixture, "rm", self.path)
        check(self.batch_size > 0, "rm.batch_size", "must be > 0")
        check(self.lr > 0, "rm.lr", "must be > 0")
        check(self.center_coef >= 0, "rm.center_coef", "must be >= 0")
        check(self.max_completion_tokens > 0 and self.max_prompt_tokens > 0, "rm.max_completion_tokens", "and rm.max_prompt_tokens must be > 0")
        check(self.num_pairs > 0, "rm.num_pairs", "must be > 0")
        check(0.0 <= self.label_noise < 0.5, "rm.label_noise", "must be in [0, 0.5)")
