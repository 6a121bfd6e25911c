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
    last = "last"  # the last assistant turn (a text row's completion); the rest conditions
    completion = "last"  # the name `last` had before conversations (an alias)
    assistant = "assistant"  # every assistant turn (TRL's assistant_only_loss); a text row's completion
    all = "all"  # every token after the first, prompt included


class Overlong(str, Enum):
    """What a supervised stage does with an example over its token limits."""

    error = "error"  # one line naming the example's file line
    truncate = "truncate"  # the prompt's start and the completion's end are cut off
    drop = "drop"  # left out; the count is said when the run starts


# Learning rates when sft.lr / rm.lr are null: the tiny default model trains from random weights and
# needs a large one; a pretrained model=hf takes TRL's defaults (SFTConfig 2e-5, RewardConfig 1e-4).
DEFAULT_LR = {"sft": {"tiny": 1.0e-3, "hf": 2.0e-5}, "rm": {"tiny": 1.0e-3, "hf": 1.0e-4}}


def check_micro_batches(section: str, size, tokens) -> None:
    check(size is None or size > 0, f"{section}.micro_batch_size", "must be > 0 or null")
    check(tokens is None or tokens > 0, f"{section}.micro_batch_tokens", "must be > 0 or null")


@dataclass
class SFTConfig:
    # Demonstrations: JSONL, a JSON array, CSV, Parquet, a saved `datasets` folder or hf:NAME with
    # prompt + completion columns (text or message lists), a messages column (chat turns, rendered by
    # the tokenizer's chat template), ShareGPT conversations, or Alpaca's instruction/input/output
    # (rlhand/data/demonstrations.py). null: the built-in task's demonstrations (letters).
    path: Optional[str] = None
    # Held-out demonstrations in their own file; null holds eval.num_prompts out of `path`'s.
    val_path: Optional[str] = None
    # Several files mixed by weight instead of `path`: name -> {path: ..., weight: ...}.
    mixture: Dict[str, Any] = field(default_factory=dict)
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    messages_column: str = "messages"
    # The tokens trained: last (the last assistant turn, or the completion), assistant (every
    # assistant turn), all (every token after the first).
    loss_on: LossOn = LossOn.last
    # Tokens before the first trained one, and from it to the end (its end of turn included).
    max_prompt_tokens: int = 256
    max_completion_tokens: int = 64
    # An example over those: error (naming its line), truncate (cut the prompt's start and the
    # completion's end) or drop (left out, counted).
    truncation: Overlong = Overlong.error
    # Demonstrations per optimizer step (over all ranks).
    batch_size: int = 16
    # Each rank's share of a batch goes through in micro-batches of at most this many examples and
    # this many padded tokens (null: no limit), gradients accumulated into one step: the same step.
    micro_batch_size: Optional[int] = None
    micro_batch_tokens: Optional[int] = None
    # null: 1e-3 with model=tiny, 2e-5 with model=hf (TRL's SFTConfig default); DEFAULT_LR above.
    lr: Optional[float] = None
    # Built-in demonstrations: how many, and the share of completion letters taken from the prompt
    # (1.0: perfect demonstrations, leaving RL nothing to improve on the gold score).
    num_examples: int = 2048
    demo_quality: float = 0.7

    def __post_init__(self) -> None:
        check_mixture(self.mixture, "sft", self.path)
        check(self.batch_size > 0, "sft.batch_size", "must be > 0")
        check(self.lr is None or self.lr > 0, "sft.lr", "must be > 0 or null")
        check_micro_batches("sft", self.micro_batch_size, self.micro_batch_tokens)
        check(self.max_completion_tokens > 0 and self.max_prompt_tokens > 0, "sft.max_completion_tokens", "and sft.max_prompt_tokens must be > 0")
        check(self.num_examples > 0, "sft.num_examples", "must be > 0")
        check(0.0 <= self.demo_quality <= 1.0, "sft.demo_quality", "must be in [0, 1]")


@dataclass
class RewardModelConfig:
    # Preference pairs: JSONL, a JSON array, CSV, Parquet, a saved `datasets` folder or hf:NAME with
    # chosen and rejected columns (texts, or message lists: TRL's implicit and explicit-prompt
    # layouts), and a prompt column when they share a prompt (leave prompt_column null for whole
    # texts; rlhand/data/preferences.py). null: the built-in task's pairs, labelled by its reward.
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
    # Tokens of a side's prompt, and of its completion (to the token its score is read at).
    max_prompt_tokens: int = 256
    max_completion_tokens: int = 64
    # A pair over those: error, truncate or drop (as sft.truncation).
    truncation: Overlong = Overlong.error
    # Pairs per optimizer step (over all ranks).
    batch_size: int = 16
    # Micro-batches of at most this many pairs and padded tokens (both sides counted), as sft's.
    micro_batch_size: Optional[int] = None
    micro_batch_tokens: Optional[int] = None
    # null: 1e-3 with model=tiny, 1e-4 with model=hf (TRL's RewardConfig default).
    lr: Optional[float] = None
    # Built-in pairs: how many, and the share whose label the gold scorer's is flipped in.
    num_pairs: int = 2048
    label_noise: float = 0.1

    def __post_init__(self) -> None:
        check_mixture(self.mixture, "rm", self.path)
        check(self.batch_size > 0, "rm.batch_size", "must be > 0")
        check(self.lr is None or self.lr > 0, "rm.lr", "must be > 0 or null")
        check_micro_batches("rm", self.micro_batch_size, self.micro_batch_tokens)
        check(self.center_coef >= 0, "rm.center_coef", "must be >= 0")
        check(self.max_completion_tokens > 0 and self.max_prompt_tokens > 0, "rm.max_completion_tokens", "and rm.max_prompt_tokens must be > 0")
        check(self.num_pairs > 0, "rm.num_pairs", "must be > 0")
        check(0.0 <= self.label_noise < 0.5, "rm.label_noise", "must be in [0, 0.5)")


def learning_rate(stage: StageKind, settings, source: str) -> float:
    """A supervised stage's learning rate: sft.lr / rm.lr, else the default for the model's source."""
    if settings.lr is not None:
        return settings.lr
    return DEFAULT_LR["sft" if stage is StageKind.sft else "rm"][source]


# What a supervised stage reads outside its own section: the optimizer's settings (algo.adam_eps,
# weight_decay, max_grad_norm) and the task's data settings below; the rest of algo, generation,
# reward and replay is the RL stage's, and a command-line value for it under stage=sft is a mistake.
SUPERVISED_READS = ("algo.adam_eps", "algo.weight_decay", "algo.max_grad_norm", "task.name", "task.source", "task.prompt_chars", "task.chat_template", "task.system_prompt")
RL_SECTIONS = ("algo.", "generation.", "reward.", "replay.", "task.")
RL_GROUPS = ("reward", "estimator", "replay")
INSTEAD = {
    "algo.lr": "its learning rate is {s}.lr",
    "algo.grad_accum_steps": "{s}.micro_batch_size and {s}.micro_batch_tokens split a batch and accumulate",
    "algo.rollout_batch_size": "its batch is {s}.batch_size",
    "task.path": "its data is {s}.path",
    "task.val_path": "its held-out data is {s}.val_path",
    "task.mixture": "its mixture is {s}.mixture",
    "task.max_prompt_tokens": "its limit is {s}.max_prompt_tokens",
    "task.truncation": "its rule is {s}.truncation",
}


def check_overrides(stage: StageKind, overrides: list[str]) -> None:
    """Command-line settings the chosen stage does not read: `algo.lr=...` under stage=sft trains
    exactly as without it, so it is an error naming the key and what the stage reads instead. (The
    other direction, sft.* or rm.* under stage=ppo, is TrainConfig's own check.)"""
    if stage is StageKind.ppo:
        return
    section = "sft" if stage is StageKind.sft else "rm"
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0].strip()
        if key in SUPERVISED_READS:
            continue
        group = "." not in key and key in RL_GROUPS
        if group or key.startswith(RL_SECTIONS):
            hint = INSTEAD.get(key, "a setting of stage=ppo").format(s=section)
            raise ValueError(f"{key}: stage={stage.value} does not read it ({hint})")
