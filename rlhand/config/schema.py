"""Dataclass schemas for every config group.

Each YAML file under conf/<group>/ lists `<group>_schema` first in its defaults, so Hydra checks
keys and types while composing; Enums reject unknown choices; `__post_init__` checks ranges and
cross-field rules when the config becomes objects (see load.py). Field names are the names used
in the YAML, on the command line and in the code.
"""

import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from rlhand.config.batch_layout import check_batch_layout
from rlhand.config.checks import check, check_mixture, check_scorer_spec
from rlhand.config.figures import PPO_PER_SET, split_watched, validation_figures
from rlhand.config.stages import RewardModelConfig, SFTConfig, StageKind
from rlhand.core.estimators import ESTIMATORS
from rlhand.core.kl import KLEstimator
from rlhand.core.losses import LossAgg


class ModelSource(str, Enum):
    tiny = "tiny"
    hf = "hf"


class CriticInit(str, Enum):
    reward_model = "reward_model"
    policy = "policy"


class CriticBackbone(str, Enum):
    separate = "separate"  # a value model of its own (TRL's PPOTrainer, OpenRLHF, verl)
    shared = "shared"  # a scalar head on the policy's backbone: half the update's matmuls


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Quantization(str, Enum):
    none = "none"
    nf4 = "nf4"  # 4-bit NormalFloat with double quantization (QLoRA), bitsandbytes
    int8 = "int8"  # LLM.int8 (8-bit weights, fp16 outliers), bitsandbytes


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Autocast(str, Enum):
    off = "off"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Strategy(str, Enum):
    auto = "auto"  # one process: none; several ranks: fsdp (ddp with model.quantization: FSDP2 cannot shard it)
    fsdp = "fsdp"  # FSDP2: parameters, gradients and optimizer states sharded over ranks
    ddp = "ddp"  # every rank holds the whole model; gradients summed over ranks


class FrozenModels(str, Enum):
    replicate = "replicate"  # reference and reward model whole on every rank: no communication
    shard = "shard"  # sharded like the trained models: 1/N of the memory, an all-gather per forward


class FitCheck(str, Enum):
    error = "error"  # an estimate over the device's memory stops the run before any model loads
    warn = "warn"
    off = "off"


class KLPlacement(str, Enum):
    reward = "reward"
    loss = "loss"


class KLControl(str, Enum):
    fixed = "fixed"
    adaptive = "adaptive"


class RewardKind(str, Enum):
    function = "function"
    model = "model"
    remote = "remote"  # a reward server over HTTP, OpenRLHF's protocol (rlhand/rewards/remote.py)


class PromptSource(str, Enum):
    builtin = "builtin"
    file = "file"


class Truncation(str, Enum):
    left = "left"
    right = "right"
    error = "error"
    drop = "drop"  # a longer prompt is left out (the count is said when the run starts)


class ChatTemplate(str, Enum):
    # Prompts (task.chat_template): message lists rendered by the tokenizer's chat template, text
    # tokenized as it is. A reward model's own tokenizer (reward.chat_template): its template when it has one.
    auto = "auto"
    on = "on"  # text too: a text prompt is rendered as one user turn
    off = "off"  # nothing rendered: text is taken as already rendered, its control tokens parsed (a message list is an error)


class SchedulerKind(str, Enum):
    constant = "constant"
    cosine = "cosine"
    plateau = "plateau"


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


# The attention implementations the padding-free wrapper can run on a re-padded batch.
REMOVE_PADDING_ATTENTION = ("eager", "sdpa")


class LoraCritic(str, Enum):
    lora = "lora"  # adapters (and a score head) of its own on its frozen base (the policy's, the RM's or model.critic)
    full = "full"  # every weight of the critic trained, as without LoRA


@dataclass
class LoraSettings:
    """model.lora: LoRA adapters (PEFT) on the policy, and on the critic unless it is full or a shared head."""

    enabled: bool = False
    rank: int = 16
    alpha: float = 32.0
    # Must be 0: rlhand switches every dropout off, LoRA's too. The policy that samples and the one
    # that trains must be the same function (the first PPO ratio is exactly 1), and the reference
    # (the base with adapters off) must be deterministic.
    dropout: float = 0.0
    # Module name suffixes, e.g. [q_proj, v_proj]; null: every linear layer of the blocks (PEFT's
    # all-linear, the output layer left out).
    target_modules: Optional[List[str]] = None
    critic: LoraCritic = LoraCritic.lora

    def __post_init__(self) -> None:
        check(self.rank > 0, "model.lora.rank", "must be > 0")
        check(self.alpha > 0, "model.lora.alpha", "must be > 0")
        check(
            self.dropout == 0,
            "model.lora.dropout",
            "must be 0: every dropout is off in rlhand, so that the sampling and the training policy are the same function",
        )


@dataclass
class ModelConfig:
    name: str = MISSING
    source: ModelSource = ModelSource.tiny
    # hf: hub id or local path of the policy (also the reference), and optional critic / reward model.
    policy: Optional[str] = None
    critic: Optional[str] = None
    critic_init: CriticInit = CriticInit.reward_model
    # separate: a critic network of its own; shared: a value head on the policy's final hidden
    # state, trained through the policy's backbone (vf_coef weighs it there). Changes the algorithm.
    critic_backbone: CriticBackbone = CriticBackbone.separate
    reward_model: Optional[str] = None
    tokenizer: Optional[str] = None
    dtype: DType = DType.float32
    # The frozen models' (reference, reward model) weights; null = dtype. bf16 halves their memory;
    # trained models keep fp32 master weights (bf16 compute: trainer.autocast=bfloat16).
    frozen_dtype: Optional[DType] = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    # The trained models' frozen bases under LoRA in 4 (nf4: QLoRA) or 8 bits (int8), and the frozen
    # reference copy and reward model (frozen_quantization), through bitsandbytes: the linear layers
    # of the transformer blocks; embeddings, norms and heads stay in frozen_dtype (models/quantize.py).
    quantization: Quantization = Quantization.none
    frozen_quantization: Quantization = Quantization.none
    # Recompute each block's activations in the backward instead of keeping them: less memory for
    # about one more forward of compute (trained models; the gradients are the same).
    gradient_checkpointing: bool = False
    # transformers' attention implementation (eager, sdpa, flash_attention_2); null = its default.
    # For small models on CPU, eager beats sdpa (measured: tiny GPT-2 backward 22% faster).
    attn_implementation: Optional[str] = None
    # Padding-free forwards: linear layers see only real tokens, attention runs re-padded
    # (rlhand/models/unpadded.py). Same results; saves the padding's share of the matmul work.
    # Needs an attention in REMOVE_PADDING_ATTENTION and no sliding window.
    remove_padding: bool = True
    trust_remote_code: bool = False
    # tiny: GPT-2 style architecture built from a config, nothing downloaded.
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_positions: int = 128

    def __post_init__(self) -> None:
        if self.source is ModelSource.hf:
            check(bool(self.policy), "model.policy", "model=hf needs a hub id or local path")
        for name in ("n_layer", "n_embd", "n_head", "n_positions"):
            check(getattr(self, name) > 0, f"model.{name}", "must be > 0")
        check(self.n_embd % self.n_head == 0, "model.n_embd", f"{self.n_embd} is not divisible by n_head={self.n_head}")
        if self.remove_padding and self.attn_implementation is not None:
            check(
                self.attn_implementation in REMOVE_PADDING_ATTENTION,
                "model.remove_padding",
                f"needs attn_implementation eager or sdpa (got {self.attn_implementation}); set model.remove_padding=false",
            )
        if self.critic_backbone is CriticBackbone.shared:
            check(self.critic is None, "model.critic", "a shared-backbone critic has no weights of its own to load (critic_backbone=shared)")
        check(
            self.quantization is Quantization.none or self.lora.enabled,
            "model.quantization",
            f"{self.quantization.value} quantizes the frozen base under LoRA: needs model.lora.enabled=true "
            "(model.frozen_quantization quantizes the reference and reward model)",
        )


@dataclass
class AlgoConfig:
    name: str = MISSING
    # Responses per PPO iteration (prompts x generation.samples_per_prompt); split into
    # num_minibatches for ppo_epochs passes.
    rollout_batch_size: int = 64
    num_minibatches: int = 4
    ppo_epochs: int = 4
    # Micro-batches per minibatch: one optimizer step each, losses normalised over the whole minibatch.
    grad_accum_steps: int = 1
    lr: float = 1e-3
    critic_lr: Optional[float] = None
    adam_eps: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: Optional[float] = 1.0
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    value_clip_ratio: Optional[float] = 0.2
    vf_coef: float = 0.1
    ent_coef: float = 0.0
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.05
    kl_estimator: KLEstimator = KLEstimator.k1
    kl_placement: KLPlacement = KLPlacement.reward
    kl_control: KLControl = KLControl.fixed
    kl_target: float = 6.0
    kl_horizon: int = 10000
    loss_agg: LossAgg = LossAgg.token_mean
    whiten_advantages: bool = True
    whiten_rewards: bool = False
    # Stop the iteration's remaining minibatches once approx_kl > 1.5 * target_kl.
    target_kl: Optional[float] = None
    # How advantages are estimated: a name registered in rlhand/core/estimators.py (gae, grpo,
    # dr_grpo, rloo, reinforce_pp; conf/estimator/ presets). gae needs a critic; the others build none.
    estimator: str = "gae"
    # Decoupled PPO's truncated importance weight on each token's policy loss, min(pi_prox /
    # pi_behaviour, this), for every token not sampled by the trainer's own policy now: a vLLM
    # engine's (other kernels: the mismatch correction, verl's token-level default 2.0, TRL's 3.0)
    # and replayed ones. null: untruncated.
    is_truncation: Optional[float] = 2.0
    # DAPO's dynamic sampling (group estimators): a group whose returns are all equal teaches
    # nothing; drop it and sample more prompts until the batch is full, or dynamic_max_rounds.
    dynamic_sampling: bool = False
    dynamic_max_rounds: int = 4

    @property
    def needs_reference(self) -> bool:
        """A KL term to a frozen reference: a coefficient above 0, or one the adaptive controller may raise."""
        return self.kl_coef > 0 or self.kl_control is KLControl.adaptive

    def __post_init__(self) -> None:
        for name in ("rollout_batch_size", "num_minibatches", "ppo_epochs", "grad_accum_steps", "kl_horizon", "dynamic_max_rounds"):
            check(getattr(self, name) > 0, f"algo.{name}", "must be > 0")
        check(self.lr > 0, "algo.lr", "must be > 0")
        check(self.critic_lr is None or self.critic_lr > 0, "algo.critic_lr", "must be > 0")
        check(self.clip_ratio_low > 0, "algo.clip_ratio_low", "must be > 0")
        check(self.clip_ratio_low < 1, "algo.clip_ratio_low", "must be < 1")
        check(self.clip_ratio_high > 0, "algo.clip_ratio_high", "must be > 0")
        check(self.value_clip_ratio is None or self.value_clip_ratio > 0, "algo.value_clip_ratio", "must be > 0 or null")
        check(self.max_grad_norm is None or self.max_grad_norm > 0, "algo.max_grad_norm", "must be > 0 or null")
        check(0.0 <= self.gamma <= 1.0, "algo.gamma", f"{self.gamma} is outside [0, 1]")
        check(0.0 <= self.lam <= 1.0, "algo.lam", f"{self.lam} is outside [0, 1]")
        for name in ("kl_coef", "vf_coef", "ent_coef", "weight_decay", "adam_eps"):
            check(getattr(self, name) >= 0, f"algo.{name}", "must be >= 0")
        check(self.kl_target > 0, "algo.kl_target", "must be > 0")
        check(self.target_kl is None or self.target_kl > 0, "algo.target_kl", "must be > 0 or null")
        check(self.is_truncation is None or self.is_truncation > 0, "algo.is_truncation", "must be > 0 or null")
        check(self.estimator in ESTIMATORS, "algo.estimator", f"{self.estimator!r} is not one of {', '.join(ESTIMATORS)}")
        if self.whiten_rewards:
            check(self.minibatch_size >= 8, "algo.whiten_rewards", "needs minibatches of at least 8 samples")

    @property
    def minibatch_size(self) -> int:
        return self.rollout_batch_size // self.num_minibatches


@dataclass
class ReplayConfig:
    name: str = MISSING
    enabled: bool = False
    # Samples kept; the oldest is evicted first.
    buffer_size: int = 1000
    # Replay starts once this many stored samples may be drawn (fresh enough, under the reuse cap).
    min_size: int = 100
    # Replayed samples added to each iteration's fresh rollout batch.
    sample_size: int = 32
    # Proportional prioritized replay (sum tree) instead of uniform sampling.
    prioritized: bool = False
    # P(i) = p_i^alpha / sum p^alpha; IS weight (N P(i))^-beta / max; beta += beta_increment per draw, up to 1.
    alpha: float = 0.6
    beta: float = 0.4
    beta_increment: float = 0.001
    # Priority = mean |advantage| of the sample's tokens + eps (never 0).
    priority_eps: float = 1.0e-6
    # A sample is replayed at most this many times.
    max_reuse: int = 4
    # A sample generated more than this many iterations ago is never replayed.
    staleness_threshold: int = 100
    # KL-adaptive reuse cap (the seed's tip "KL < 0.01: reuse up to 6, else 2"): pairs [kl_below, cap]
    # in increasing kl_below. After each update the cap is that of the first pair whose kl_below is
    # above the update's policy/approx_kl (how far the policy moved), else max_reuse; e.g.
    # [[0.01, 6]] with max_reuse=2. null: max_reuse always.
    adaptive_reuse: Optional[List[Any]] = None  # checked below (OmegaConf types no nested int/float mix)
    # The share of fresh samples in every update batch, and in every minibatch of it (the seed's
    # "50% new + 50% replayed" is 0.5): sets sample_size = rollout_batch_size x (1 - f) / f. null:
    # sample_size as given, fresh and replayed rows shuffled together.
    fresh_fraction: Optional[float] = None

    def reuse_cap(self, approx_kl: float | None) -> int:
        """The reuse cap after an update whose policy/approx_kl was `approx_kl` (None: no update yet)."""
        if self.adaptive_reuse and approx_kl is not None:
            for kl_below, cap in self.adaptive_reuse:
                if approx_kl < kl_below:
                    return int(cap)
        return self.max_reuse

    def __post_init__(self) -> None:
        # Checked whether replay is on or not: a value given for later (or by mistake) is never
        # accepted silently.
        if self.adaptive_reuse is not None:
            pairs = [[pair] if isinstance(pair, (int, float, str)) else list(pair) for pair in self.adaptive_reuse]
            check(
                all(len(pair) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair) for pair in pairs),
                "replay.adaptive_reuse",
                "must be a list of [kl_below, cap] number pairs, e.g. [[0.01,6]]",
            )
            check(all(pair[0] > 0 and pair[1] >= 1 and float(pair[1]).is_integer() for pair in pairs), "replay.adaptive_reuse", "needs kl_below > 0 and whole caps >= 1")
            check(all(a[0] < b[0] for a, b in zip(pairs, pairs[1:])), "replay.adaptive_reuse", "kl_below must increase from pair to pair")
        if self.fresh_fraction is not None:
            check(0 < self.fresh_fraction < 1, "replay.fresh_fraction", "is outside (0, 1)")
        for name in ("buffer_size", "sample_size", "max_reuse"):
            check(getattr(self, name) > 0, f"replay.{name}", "must be > 0")
        check(0 <= self.min_size <= self.buffer_size, "replay.min_size", f"must be in [0, buffer_size={self.buffer_size}]")
        check(self.sample_size <= self.buffer_size, "replay.sample_size", f"must be <= buffer_size={self.buffer_size}")
        check(self.staleness_threshold >= 0, "replay.staleness_threshold", "must be >= 0")
        check(self.alpha >= 0, "replay.alpha", "must be >= 0")
        check(0 <= self.beta <= 1, "replay.beta", "is outside [0, 1]")
        check(self.beta_increment >= 0, "replay.beta_increment", "must be >= 0")
        check(self.priority_eps > 0, "replay.priority_eps", "must be > 0")


@dataclass
class SchedulerConfig:
    name: str = MISSING
    kind: SchedulerKind = SchedulerKind.constant
    # Linear warmup from 0 over this many PPO iterations (every kind).
    warmup_steps: int = 0
    # cosine: decay towards lr * min_lr_ratio by trainer.max_steps; plateau: the floor of the LR.
    min_lr_ratio: float = 0.0
    # plateau: multiply the LR by `factor` after `patience` validations whose val/reward did not
    # beat the best by more than `threshold` (absolute). Needs eval.every > 0.
    factor: float = 0.5
    patience: int = 2
    threshold: float = 0.001

    def __post_init__(self) -> None:
        check(self.warmup_steps >= 0, "scheduler.warmup_steps", "must be >= 0")
        check(0.0 <= self.min_lr_ratio <= 1.0, "scheduler.min_lr_ratio", "is outside [0, 1]")
        check(0.0 < self.factor < 1.0, "scheduler.factor", "is outside (0, 1)")
        check(self.patience >= 0, "scheduler.patience", "must be >= 0")
        check(self.threshold >= 0, "scheduler.threshold", "must be >= 0")


@dataclass
class LoggingConfig:
    name: str = MISSING
    # rich progress bar with the compact PL/VL/R/KL line; off prints a line every console_every steps.
    progress_bar: bool = True
    console_every: int = 10
    # logs/metrics.jsonl: one JSON object per PPO iteration (what rlhand-compare reads).
    jsonl: bool = True
    # logs/train_<time>.log: timestamped INFO/WARNING/ERROR lines.
    text_log: bool = True
    # logs/tensorboard/: event files for `tensorboard --logdir outputs`.
    tensorboard: bool = False
    # Weights & Biases, offline unless wandb_mode=online; it never blocks or fails a run.
    wandb: bool = False
    wandb_mode: WandbMode = WandbMode.offline
    wandb_project: str = "rlhand"
    wandb_entity: Optional[str] = None
    # plots/*.png of the run's metrics, written at the end.
    plots: bool = False

    def __post_init__(self) -> None:
        check(self.console_every > 0, "logging.console_every", "must be > 0")


@dataclass
class TaskConfig:
    name: str = MISSING
    source: PromptSource = PromptSource.builtin
    # builtin: the task's prompt generator.
    num_prompts: int = 2048
    prompt_chars: int = 8
    # file: JSONL, CSV, Parquet or a saved `datasets` folder with a prompt column.
    path: Optional[str] = None
    prompt_column: str = "prompt"
    # file: several prompt files mixed by weight instead of `path`: name -> {path: ..., weight: ...}.
    mixture: Dict[str, Any] = field(default_factory=dict)
    # Validation prompts from their own file (same formats); null holds eval.num_prompts out of the
    # training prompts instead.
    val_path: Optional[str] = None
    max_prompt_tokens: int = 32
    truncation: Truncation = Truncation.left
    # How prompts become ids in every stage (rlhand/data/prompts.py): auto renders message lists with
    # the tokenizer's chat template (and the generation prompt) and tokenizes text as text; on renders
    # text as one user turn too; off renders nothing and takes text as already rendered (its control
    # tokens are control tokens).
    chat_template: ChatTemplate = ChatTemplate.auto
    # A system turn before every rendered conversation that has none of its own; null: the template's default.
    system_prompt: Optional[str] = None
    # The ground-truth column reward functions receive as `labels` (and reward servers as OpenRLHF's
    # `labels`); a dotted path reads a nested one, e.g. reward_model.ground_truth (verl's layout).
    label_column: Optional[str] = None

    def __post_init__(self) -> None:
        check_mixture(self.mixture, "task", self.path)
        check(self.system_prompt is None or self.chat_template is not ChatTemplate.off, "task.system_prompt", "needs a chat template to render it (task.chat_template is off)")
        check(self.label_column is None or bool(self.label_column.strip(". ")), "task.label_column", "names a column (or a dotted path into one)")
        if self.source is PromptSource.file:
            check(bool(self.path) or bool(self.mixture), "task.path", "task.source=file needs a path (or a task.mixture)")
        check(self.num_prompts > 0, "task.num_prompts", "must be > 0")
        check(self.prompt_chars > 0, "task.prompt_chars", "must be > 0")
        check(self.max_prompt_tokens > 0, "task.max_prompt_tokens", "must be > 0")


class Normalize(str, Enum):
    off = "off"
    saved = "saved"  # a reward model's statistics from stage=reward_model (score_stats.json in its folder)
    running = "running"  # the running mean and std of every score so far (resumable)


class OnFailure(str, Enum):
    score = "score"  # the sample scores reward.failure_score and is counted
    stop = "stop"  # the run stops with one line naming the sample


@dataclass
class RewardConfig:
    name: str = MISSING
    kind: RewardKind = RewardKind.function
    # function: `_target_` names a callable (or a class, instantiated with the other keys) that
    # takes prompts and responses and returns one float each; see rlhand/rewards/function.py.
    function: Optional[Dict[str, Any]] = None
    # Standardise this reward's scores, so kl_coef means the same whatever their scale: saved (a
    # reward model's mean and std that stage=reward_model measured on held-out pairs, score_stats.json
    # in its folder), running (the mean and std of every score so far, over all ranks, resumed from
    # checkpoints) or off. The raw mean is logged as reward/unnormalized. clip: then clip to [-clip, clip].
    normalize: Normalize = Normalize.off
    clip: Optional[float] = None
    # model with a tokenizer of its own (not the policy's): texts are decoded and tokenized again for
    # it, rendered as a user/assistant exchange with its chat template (auto: when it has one).
    chat_template: ChatTemplate = ChatTemplate.auto
    # remote: the server's URL (http or https), seconds per request, retries (with backoff), texts per
    # request and requests in flight at once. function: timeout_s bounds each call (a batch; with
    # workers, each sample), 0 for none; past it the run stops with one line naming the function.
    # Several rewards: the score is weight * this reward + the sum of each component's weight times
    # its score (components: name -> {weight: w} with one of _target_: module.function (and its
    # arguments), model: a reward-model folder, url: a reward server); each component's mean is
    # logged as reward/<name>, this reward's as reward/main.
    weight: float = 1.0
    components: Dict[str, Any] = field(default_factory=dict)
    url: Optional[str] = None
    timeout_s: float = 30.0
    retries: int = 3
    request_size: int = 64
    in_flight: int = 4
    # function: score each sample alone in this many worker processes (0: batches in the training
    # process). A sample that times out, raises or whose worker dies, and any the function returns
    # as Unscored, scores failure_score and is counted (reward/timeouts, reward/errors), or ends the
    # run (on_failure=stop).
    workers: int = 0
    failure_score: float = 0.0
    on_failure: OnFailure = OnFailure.score

    def __post_init__(self) -> None:
        check(self.workers >= 0, "reward.workers", f"must be >= 0, not {self.workers}")
        check(self.timeout_s >= 0, "reward.timeout_s", f"must be >= 0 (0: no limit), not {self.timeout_s}")
        check(math.isfinite(self.failure_score), "reward.failure_score", "must be a finite number")
        check(self.workers == 0 or self.kind is RewardKind.function, "reward.workers", "scores a reward function in worker processes; a reward model or server has none")
        if self.kind is RewardKind.remote:
            check(bool(self.url) and str(self.url).startswith(("http://", "https://")), "reward.url", "reward=remote needs an http:// or https:// URL" + (f", not {self.url!r}" if self.url else ""))
            check(self.timeout_s > 0 and self.retries >= 0 and self.request_size > 0 and self.in_flight > 0, "reward", "timeout_s, request_size and in_flight must be > 0, retries >= 0")
        for name, spec in self.components.items():
            check_scorer_spec(spec, f"reward.components.{name}", weighted=True)
            check(name not in ("main", "timeouts", "errors"), f"reward.components.{name}", "'main', 'timeouts' and 'errors' name the run's own figures (reward/main, reward/timeouts, reward/errors)")
        check(self.normalize is not Normalize.saved or self.kind is RewardKind.model, "reward.normalize", "saved: a reward model's statistics, needs reward=model (running works with any reward)")
        check(self.clip is None or self.clip > 0, "reward.clip", "must be > 0 or null")
        if self.kind is RewardKind.function and not (self.function or {}).get("_target_"):
            # reward=none (conf/reward/none.yaml) is the default for every task but letters: a run
            # on a user's prompts never falls back silently to a built-in reward.
            check(
                False,
                "reward",
                "no reward chosen: use reward=model with model.reward_model=PATH, or reward.function._target_=module.function "
                "(only task=letters brings a reward of its own)",
            )


class VLLMLora(str, Enum):
    auto = "auto"
    adapters = "adapters"
    merged = "merged"


class Engine(str, Enum):
    hf = "hf"  # rlhand's own KV-cache sampling loop over the policy
    vllm = "vllm"  # a vLLM engine in each training process, its weights pushed every iteration


@dataclass
class GenerationConfig:
    max_new_tokens: int = 16
    # Responses sampled per prompt (the seed's GROUP_SIZE): algo.rollout_batch_size counts responses,
    # so an iteration samples rollout_batch_size / samples_per_prompt prompts, each's group in
    # consecutive rows. Group estimators (algo.estimator=grpo|dr_grpo|rloo) need 2 or more.
    samples_per_prompt: int = 1
    temperature: float = 1.0
    # 0 / 1.0 switch them off. They choose which tokens can be drawn; every log-prob (behaviour,
    # proximal, the PPO ratio's) is under the tempered softmax over the whole vocabulary, on both
    # engines (rlhand/core/sampling.py). The truncation itself is not importance-corrected.
    top_k: int = 0
    top_p: float = 1.0
    # Subtracted from the score of a response that never emits EOS; null = no penalty.
    missing_eos_penalty: Optional[float] = None
    engine: Engine = Engine.hf
    # vllm on CUDA: the share of GPU memory the engine may take (weights and KV cache), and
    # whether it sleeps (frees its KV cache and weights) while the trainer updates.
    gpu_memory_utilization: float = 0.3
    vllm_sleep: bool = True
    # vllm with LoRA: push the adapters themselves (vLLM's LoRA support, where it has it for the
    # architecture) or the adapted layers merged. auto: adapters on CUDA, merged on a CPU (vLLM's
    # CPU LoRA kernels sampled a 0.5B model 3x slower than the merged one: docs/engines.md).
    vllm_lora: VLLMLora = VLLMLora.auto

    def __post_init__(self) -> None:
        check(self.max_new_tokens > 0, "generation.max_new_tokens", "must be > 0")
        check(self.samples_per_prompt > 0, "generation.samples_per_prompt", "must be > 0")
        check(self.temperature > 0, "generation.temperature", "must be > 0")
        check(self.top_k >= 0, "generation.top_k", "must be >= 0")
        check(0.0 < self.top_p <= 1.0, "generation.top_p", "is outside (0, 1]")
        check(0.0 < self.gpu_memory_utilization < 1.0, "generation.gpu_memory_utilization", "is outside (0, 1)")


@dataclass
class TrainerConfig:
    # PPO iterations (rollout + update).
    max_steps: int = 150
    device: Device = Device.auto
    # torch intra-op threads; null keeps torch's default.
    threads: Optional[int] = None
    save_final: bool = True
    # CUDA only: release cached blocks at phase boundaries (after rollout, after update).
    empty_cache: bool = False
    # Mixed precision for every forward pass (sampling, scoring, update) with fp32 weights and
    # optimizer: bfloat16 on CPUs with AVX512-BF16/AMX and on GPUs; float16 on GPUs only.
    autocast: Autocast = Autocast.off
    # CPU with 2+ threads: the update runs the policy's and the critic's forward, backward and
    # optimizer step side by side, each on half of the threads (rlhand/models/concurrent.py). The
    # same math; only float rounding in the matmuls may differ. Not used on CUDA, nor with a
    # shared-backbone critic (one forward serves both).
    concurrent_models: bool = True
    # Several processes (torchrun / a SLURM job): how the trained models are laid out over them,
    # and the frozen ones (rlhand/distributed/sharding.py). Ignored by a one-process run.
    strategy: Strategy = Strategy.auto
    frozen_models: FrozenModels = FrozenModels.replicate
    # FSDP2 only: parameters, gradients and optimizer states live in CPU memory between uses.
    offload: bool = False
    # The memory estimate (rlhand/models/fit.py) printed before any model loads is checked against
    # this many GiB per device (null: the GPU's own, or this machine's RAM).
    device_memory_gb: Optional[float] = None
    fit_check: FitCheck = FitCheck.error
    # The output layer computes log-probs and entropies a chunk of positions at a time, each chunk's
    # float32 logits at most this many MiB (rlhand/core/logprobs.py); null: all positions at once.
    # At a 151,936-token vocabulary 256 MiB is 441 positions.
    logits_chunk_mb: Optional[int] = 256
    # No-grad scoring forwards (reference, proximal, values, reward model, replay, validation) run
    # on at most this many tokens (rows x padded length) at a time (rlhand/models/scoring.py); null:
    # the whole batch at once.
    score_max_tokens: Optional[int] = 16384

    def __post_init__(self) -> None:
        check(self.max_steps > 0, "trainer.max_steps", "must be > 0")
        check(self.logits_chunk_mb is None or self.logits_chunk_mb > 0, "trainer.logits_chunk_mb", "must be > 0 or null")
        check(self.score_max_tokens is None or self.score_max_tokens > 0, "trainer.score_max_tokens", "must be > 0 or null")
        check(self.threads is None or self.threads > 0, "trainer.threads", "must be > 0 or null")
        check(self.device_memory_gb is None or self.device_memory_gb > 0, "trainer.device_memory_gb", "must be > 0 or null")


@dataclass
class CheckpointConfig:
    # Full training state every N PPO iterations and at the end; 0 = no checkpoints.
    every: int = 0
    # Keep the newest K checkpoints (the best model lives apart, in best/).
    keep: int = 2

    def __post_init__(self) -> None:
        check(self.every >= 0, "checkpoint.every", "must be >= 0")
        check(self.keep > 0, "checkpoint.keep", "must be > 0")


@dataclass
class EvalConfig:
    # Validate every N PPO iterations (and after the last); 0 = no validation.
    every: int = 0
    # Prompts held out from the task's prompts (or the first ones of task.val_path).
    num_prompts: int = 64
    # Save the policy and critic to best/ whenever the watched figure (early_stop.metric) improves.
    save_best: bool = True
    # More scorers of every validation response beside the run's reward, each logged as
    # val/reward_<name> (e.g. a gold score while training against a learned reward model): name ->
    # {_target_: module.function, ...} (a reward function), {model: FOLDER} (a reward model) or
    # {url: http://...} (a reward server), as reward.components takes them.
    scorers: Dict[str, Any] = field(default_factory=dict)
    # Also validate the starting model before the first step (logs/val_before_training.json).
    before_training: bool = False
    # Held-out prompts whose responses and scores each validation writes to logs/samples.jsonl and
    # TensorBoard text (the console shows the first); 0 = none.
    samples: int = 4
    # Also write eval.samples responses of every N-th iteration's training rollout ("split": "train";
    # validation's are "val"), each with its score as training used it; 0 = at validation only.
    samples_every: int = 0
    # More prompt sets validated beside the held-out prompts, each logged as val/<set>/<figure>
    # (reward, reward_<scorer>, kl, entropy, response_length): name -> {path: FILE, num_prompts: N
    # (default eval.num_prompts), prompt_column: ... (default task.prompt_column)}.
    prompt_sets: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.every >= 0, "eval.every", "must be >= 0")
        check(self.num_prompts > 0, "eval.num_prompts", "must be > 0")
        check(self.samples >= 0, "eval.samples", "must be >= 0")
        check(self.samples_every >= 0, "eval.samples_every", "must be >= 0")
        check(not self.before_training or self.every > 0, "eval.before_training", "needs eval.every > 0 (the held-out prompts)")
        for name, spec in self.scorers.items():
            check_scorer_spec(spec, f"eval.scorers.{name}")
        for name, spec in self.prompt_sets.items():
            field_name = f"eval.prompt_sets.{name}"
            check(re.fullmatch(r"[A-Za-z0-9_.-]+", name) is not None and name not in PPO_PER_SET, field_name, "a name of letters, digits, _ . - that is not a figure's")
            check(name not in self.scorers and f"reward_{name}" not in self.scorers, field_name, "the name of an eval.scorers entry too; name them apart")
            check(isinstance(spec, dict) and bool(spec.get("path")), field_name, "needs a path (a prompt file)")
            check(isinstance(spec.get("prompt_column", ""), str), f"{field_name}.prompt_column", "needs a column name")
            unknown = sorted(set(spec) - {"path", "num_prompts", "prompt_column"})
            check(not unknown, f"{field_name}.{unknown[0] if unknown else ''}", "not a prompt-set setting (have path, num_prompts, prompt_column)")
            n = spec.get("num_prompts", self.num_prompts)
            check(isinstance(n, int) and not isinstance(n, bool) and n > 0, f"{field_name}.num_prompts", "needs a whole number > 0")


@dataclass
class EarlyStopConfig:
    # Stop after this many validations in a row without val/reward beating the best by more
    # than `threshold`; null = never stop early.
    patience: Optional[int] = None
    threshold: float = 0.001
    # The validation figure early stopping, the plateau LR, best/ and a tuning sweep follow, higher is
    # better ("-" in front: lower is), e.g. val/reward_gold or val/<set>/reward; null: the stage's own
    # (val/reward for ppo, -val/loss for sft, val/accuracy for reward_model).
    metric: Optional[str] = None

    def __post_init__(self) -> None:
        check(self.patience is None or self.patience > 0, "early_stop.patience", "must be > 0 or null")
        check(self.metric is None or self.metric.lstrip("-").startswith("val/"), "early_stop.metric", f"names a validation figure (val/...), not {self.metric!r}")
        check(self.threshold >= 0, "early_stop.threshold", "must be >= 0")


RESUME_AUTO = "auto"  # resume=auto: continue this run folder from its newest valid checkpoint


@dataclass
class TrainConfig:
    # What trains: ppo (RL), sft (supervised fine-tuning) or reward_model (rlhand/stages/).
    stage: StageKind = StageKind.ppo
    seed: int = 0
    model: ModelConfig = MISSING
    algo: AlgoConfig = MISSING
    replay: ReplayConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    logging: LoggingConfig = MISSING
    task: TaskConfig = MISSING
    reward: RewardConfig = MISSING
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rm: RewardModelConfig = field(default_factory=RewardModelConfig)
    # null: start fresh; auto (RESUME_AUTO): the newest valid checkpoint in this run's folder (fresh if none);
    # a path: that checkpoint folder, or the newest valid checkpoint of that run folder.
    resume: Optional[str] = None

    def __post_init__(self) -> None:
        self._check_stage_settings()
        self._check_watched_figure()
        self._check_estimator()
        self._resolve_replay_rows()
        self._check_rest()

    def _check_stage_settings(self) -> None:
        """A setting of another stage is a mistake (a missing stage=...), not something to ignore."""
        for section, stage, default in (("sft", StageKind.sft, SFTConfig()), ("rm", StageKind.reward_model, RewardModelConfig())):
            if self.stage is not stage:
                given = [k for k, v in vars(getattr(self, section)).items() if v != getattr(default, k)]
                check(not given, f"{section}.{given[0] if given else ''}", f"a setting of stage={stage.value}, given to stage={self.stage.value}")
        if self.stage is not StageKind.ppo:
            check(not self.replay.enabled, "replay", f"experience replay belongs to stage=ppo, not stage={self.stage.value}")

    def _check_watched_figure(self) -> None:
        if self.stage is not StageKind.ppo:
            for key in ("scorers", "prompt_sets", "samples_every"):
                check(not getattr(self.eval, key), f"eval.{key}", f"belongs to validating generations (stage=ppo), not stage={self.stage.value}")
        if self.early_stop.metric is None:
            return
        check(self.eval.every > 0, "early_stop.metric", "follows a validation figure: needs eval.every > 0")
        sign, name = split_watched(self.early_stop.metric)
        known = validation_figures(self)
        check(name in known, "early_stop.metric", f"no validation logs {name!r} (have {', '.join(sorted(known))})")

    def _check_estimator(self) -> None:
        group, algo = self.generation.samples_per_prompt, self.algo
        estimator = ESTIMATORS[algo.estimator]
        if estimator.grouped:
            check(group >= 2, "generation.samples_per_prompt", f"algo.estimator={algo.estimator} compares responses to one prompt: set 2 or more")
            check(
                not algo.whiten_rewards,
                "algo.whiten_rewards",
                f"algo.estimator={algo.estimator} takes its group statistics over the scores; whitening token rewards applies to gae and reinforce_pp",
            )
        check(
            not algo.dynamic_sampling or estimator.grouped,
            "algo.dynamic_sampling",
            f"drops groups of equal returns: needs a group estimator (grpo, dr_grpo, rloo), not {algo.estimator}",
        )
        if not estimator.needs_critic:
            check(
                self.model.critic_backbone is CriticBackbone.separate,
                "model.critic_backbone",
                f"algo.estimator={algo.estimator} has no critic: leave critic_backbone at separate",
            )

    def _resolve_replay_rows(self) -> None:
        """replay.fresh_fraction decides replay.sample_size: a whole number of replayed rows, shared
        equally by the minibatches."""
        replay, algo = self.replay, self.algo
        if replay.enabled and replay.fresh_fraction is not None:
            exact = algo.rollout_batch_size * (1 - replay.fresh_fraction) / replay.fresh_fraction
            check(
                abs(exact - round(exact)) < 1e-6 and round(exact) >= 1,
                "replay.fresh_fraction",
                f"{replay.fresh_fraction} of rollout_batch_size={algo.rollout_batch_size} fresh rows needs {exact:g} replayed rows, not a whole number",
            )
            replay.sample_size = int(round(exact))
            check(replay.sample_size <= replay.buffer_size, "replay.fresh_fraction", f"needs {replay.sample_size} replayed rows, more than buffer_size")
            check(
                replay.sample_size % algo.num_minibatches == 0,
                "replay.fresh_fraction",
                f"every minibatch takes an equal share of the {replay.sample_size} replayed rows: not divisible by num_minibatches={algo.num_minibatches}",
            )

    def _check_rest(self) -> None:
        check_batch_layout(self)  # one rank here; setup checks the same rules for N (rlhand/config/batch_layout.py)
        if self.scheduler.kind is SchedulerKind.plateau:
            check(self.eval.every > 0, "scheduler.kind", "plateau is driven by val/reward and needs eval.every > 0")
        if self.early_stop.patience is not None:
            check(self.eval.every > 0, "early_stop.patience", "early stopping watches val/reward and needs eval.every > 0")
        check(
            self.model.n_positions >= self.task.max_prompt_tokens + self.generation.max_new_tokens
            or self.model.source is ModelSource.hf
            or self.stage is not StageKind.ppo,  # the supervised stages check their examples' lengths
            "model.n_positions",
            f"{self.model.n_positions} < task.max_prompt_tokens + generation.max_new_tokens",
        )
        if self.reward.kind is RewardKind.model and self.model.source is ModelSource.hf:
            check(bool(self.model.reward_model), "model.reward_model", "reward.kind=model needs a reward model path")
        if self.model.frozen_quantization is not Quantization.none:
            copy = self.algo.needs_reference and not self.model.lora.enabled and self.stage is StageKind.ppo
            check(
                copy or (self.reward.kind is RewardKind.model and self.stage is StageKind.ppo),
                "model.frozen_quantization",
                "this run has no frozen model of its own to quantize (with LoRA the reference is the policy's base: model.quantization)",
            )
        if self.model.quantization is not Quantization.none:
            check(self.generation.engine is Engine.hf, "model.quantization", "a quantized training base with generation.engine=vllm is not supported: use generation.engine=hf")
        shared_critic = self.model.critic_backbone is CriticBackbone.shared
        if self.model.source is ModelSource.hf and shared_critic:
            check(
                self.model.critic_init is CriticInit.policy,
                "model.critic_init",
                "a shared-backbone critic starts from the policy (critic_init=policy)",
            )
        if self.model.source is ModelSource.hf and self.model.critic is None and not shared_critic:
            check(
                self.model.critic_init is CriticInit.policy or bool(self.model.reward_model),
                "model.critic_init",
                "reward_model needs model.reward_model (or set model.critic, or critic_init=policy)",
            )
