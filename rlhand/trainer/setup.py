"""Build a run from a TrainConfig: inputs that can be wrong are checked before any model loads."""

import os
import random
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from rlhand.config.load import ConfigError
from rlhand.config.schema import (
    Autocast,
    Device,
    FitCheck,
    FrozenModels,
    KLControl,
    ModelSource,
    RewardKind,
    Strategy,
    TrainConfig,
)
from rlhand.core.kl import AdaptiveKLController, FixedKLController
from rlhand.data.prompts import encode_prompts, load_prompts, read_prompt_file, split_holdout
from rlhand.data.tokenizer import build_char_tokenizer, load_tokenizer
from rlhand.distributed import context
from rlhand.distributed.context import DistContext
from rlhand.distributed.sharding import shard_model
from rlhand.models.build import Models, build_models, policy_config
from rlhand.models.concurrent import ModelThreads, shared_model_threads
from rlhand.models.critic import has_critic
from rlhand.models.fit import check_fit, estimate_memory
from rlhand.models.forward import ForwardLimits
from rlhand.models.lora import check_targets
from rlhand.models.sources import check_model_sources, loading
from rlhand.replay.buffer import ReplayBuffer
from rlhand.replay.mixer import ExperienceReplay
from rlhand.rewards import FunctionScorer, ModelScorer, resolve_reward_function
from rlhand.rollout.engines import GenerationEngine, build_engine
from rlhand.trainer.learner import Learner
from rlhand.trainer.update import Learners


@dataclass
class RunInputs:
    """Everything read from the config and disk that is cheap to check: no model yet."""

    tokenizer: PreTrainedTokenizerBase
    prompt_ids: list[list[int]]
    val_prompt_ids: list[list[int]]  # empty unless eval.every > 0
    reward_fn: Callable | None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_for_rank(seed: int, ctx: DistContext) -> None:
    """Every rank builds its models from the same seed (identical weights to shard or replicate);
    after that each samples and shuffles with a stream of its own. One process: unchanged."""
    if ctx.enabled:
        seed_everything(int(np.random.SeedSequence([seed, ctx.rank]).generate_state(1)[0]))


def resolve_device(device: Device, ctx: DistContext | None = None) -> torch.device:
    """The run's device; with several ranks on CUDA, this rank's GPU (its LOCAL_RANK)."""
    if device is Device.cuda and not torch.cuda.is_available():
        raise ConfigError("trainer.device: cuda was asked for but torch sees no CUDA device")
    if device is Device.cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", ctx.local_rank) if ctx is not None and ctx.enabled else torch.device("cuda")


def check_layout(cfg: TrainConfig, ctx: DistContext) -> None:
    """Every rank takes an equal share of each batch (and of validation, and of the replay buffer);
    a size that does not split is a one-line error before anything loads."""
    if not ctx.enabled:
        return
    n, algo = ctx.world_size, cfg.algo

    def require(splits: bool, field: str, what) -> None:
        if not splits:
            raise ConfigError(f"{field}: {what} does not split over {n} ranks")

    require(algo.rollout_batch_size % n == 0, "algo.rollout_batch_size", algo.rollout_batch_size)
    local, parts = algo.rollout_batch_size // n, algo.num_minibatches * algo.grad_accum_steps
    require(local % parts == 0, "algo.num_minibatches", f"each rank's {local} prompts into {algo.num_minibatches} x {algo.grad_accum_steps}")
    group = cfg.generation.samples_per_prompt
    if group > 1:  # each rank samples whole groups and its minibatch shares hold whole groups
        require((algo.rollout_batch_size // group) % n == 0, "generation.samples_per_prompt", f"{algo.rollout_batch_size // group} prompts of {group} responses")
        require((local // algo.num_minibatches) % group == 0, "algo.num_minibatches", f"each rank's minibatch share of whole groups of {group}")
        if cfg.replay.enabled:
            require((cfg.replay.sample_size // n) % algo.num_minibatches == 0, "replay.sample_size", "each rank's replayed rows into its minibatches")
    if cfg.eval.every:
        require(cfg.eval.num_prompts % n == 0, "eval.num_prompts", cfg.eval.num_prompts)
    if cfg.replay.enabled:
        for field in ("buffer_size", "min_size", "sample_size"):
            require(getattr(cfg.replay, field) % n == 0, f"replay.{field}", getattr(cfg.replay, field))
        require((local + cfg.replay.sample_size // n) % parts == 0, "replay.sample_size", "each rank's fresh + replayed rows")


def check_memory(cfg: TrainConfig, inputs: RunInputs, ctx: DistContext, device: torch.device) -> str:
    """The memory estimate, on the console now (before any model loads; rank 0), and an error if it
    is over the device's memory (trainer.fit_check)."""
    if cfg.trainer.fit_check is FitCheck.off:
        return "memory estimate: off (trainer.fit_check=off)"
    lengths = [len(ids) for ids in inputs.prompt_ids]
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))  # torchrun's ranks on this machine
    line = check_fit(estimate_memory(cfg, inputs.tokenizer, lengths, ctx.world_size, device, local_ranks), cfg)
    if ctx.is_main:
        print(line, file=sys.stderr, flush=True)
    return line


def distribute_models(cfg: TrainConfig, models: Models, ctx: DistContext, device: torch.device) -> str:
    """Lay the models out over the ranks (trainer.strategy); returns the strategy in use."""
    if not ctx.enabled:
        return "single"
    strategy = "fsdp" if cfg.trainer.strategy in (Strategy.auto, Strategy.fsdp) else "ddp"
    param_dtype = {Autocast.bfloat16: torch.bfloat16, Autocast.float16: torch.float16}.get(cfg.trainer.autocast)
    if strategy == "fsdp":
        shard_model(models.policy, ctx, device, param_dtype, cfg.trainer.offload)
        if has_critic(models.critic):
            shard_model(models.critic.module, ctx, device, param_dtype, cfg.trainer.offload)
    if cfg.trainer.frozen_models is FrozenModels.shard:
        for frozen in (models.ref, models.reward_model):
            if frozen is not None:
                shard_model(frozen, ctx, device, param_dtype)
    return strategy


def prepare_inputs(cfg: TrainConfig) -> RunInputs:
    check_model_sources(cfg.model, need_reward_model=cfg.reward.kind is RewardKind.model)
    if cfg.model.source is ModelSource.tiny:
        tokenizer = build_char_tokenizer()
    else:
        field, source = ("model.tokenizer", cfg.model.tokenizer) if cfg.model.tokenizer else ("model.policy", cfg.model.policy)
        with loading(field, source):
            tokenizer = load_tokenizer(source, cfg.model.trust_remote_code)
    if cfg.model.lora.enabled and cfg.model.lora.target_modules:
        check_targets(cfg.model.lora, policy_config(cfg.model, tokenizer))
    reward_fn = resolve_reward_function(cfg.reward.function) if cfg.reward.kind is RewardKind.function else None
    task = cfg.task
    prompts, val_prompts = load_prompts(task, cfg.seed), []
    if cfg.eval.every > 0:
        if task.val_path:
            val_prompts = read_prompt_file(Path(task.val_path), task.prompt_column)[: cfg.eval.num_prompts]
        else:
            prompts, val_prompts = split_holdout(prompts, cfg.eval.num_prompts, cfg.seed)
    ctx = context.current()
    if ctx.enabled and len(val_prompts) % ctx.world_size:
        raise ConfigError(f"task.val_path: its {len(val_prompts)} validation prompts do not split over {ctx.world_size} ranks")
    return RunInputs(
        tokenizer=tokenizer,
        prompt_ids=encode_prompts(tokenizer, prompts, task.max_prompt_tokens, task.truncation),
        val_prompt_ids=encode_prompts(tokenizer, val_prompts, task.max_prompt_tokens, task.truncation),
        reward_fn=reward_fn,
    )


def prepare_models(cfg: TrainConfig, inputs: RunInputs, device: torch.device) -> tuple[Models, Callable]:
    need_ref = cfg.algo.kl_coef > 0 or cfg.algo.kl_control is KLControl.adaptive
    need_rm = cfg.reward.kind is RewardKind.model
    models = build_models(
        cfg.model, inputs.tokenizer, need_ref=need_ref, need_reward_model=need_rm, device=device, need_critic=cfg.algo.estimator.needs_critic
    )
    models.limits = forward_limits(cfg)
    if need_rm:
        scorer = ModelScorer(models.reward_model, cfg.trainer.score_max_tokens)
    else:
        scorer = FunctionScorer(inputs.reward_fn, inputs.tokenizer, name=f"reward function {cfg.reward.function['_target_']}")
    return models, scorer


def forward_limits(cfg: TrainConfig) -> ForwardLimits:
    mb = cfg.trainer.logits_chunk_mb
    return ForwardLimits(logit_chunk_bytes=None if mb is None else mb * 2**20, score_max_tokens=cfg.trainer.score_max_tokens)


def build_learners(cfg: TrainConfig, models: Models, ctx: DistContext | None = None, strategy: str = "single") -> Learners:
    """A learner per trained model, each with its own AdamW (separate learning rates) and clipping.
    Built after sharding: an optimizer over FSDP2's sharded parameters keeps sharded states."""
    algo = cfg.algo

    def learner(module, lr) -> Learner:
        # fused: one kernel for all parameters (CPU and CUDA), the same update as the default loop.
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, eps=algo.adam_eps, weight_decay=algo.weight_decay, fused=True)
        return Learner(module, optimizer, algo.max_grad_norm, ctx, sum_gradients=strategy == "ddp")

    critic = learner(models.critic.module, algo.critic_lr or algo.lr) if has_critic(models.critic) else None
    return Learners(policy=learner(models.policy, algo.lr), critic=critic)


def build_kl_controller(cfg: TrainConfig) -> FixedKLController:
    algo = cfg.algo
    if algo.kl_control is KLControl.adaptive:
        return AdaptiveKLController(algo.kl_coef, algo.kl_target, algo.kl_horizon)
    return FixedKLController(algo.kl_coef)


def build_replay(cfg: TrainConfig, inputs: RunInputs, models: Models, device: torch.device, ctx: DistContext | None = None) -> ExperienceReplay | None:
    """The replay buffer; with several ranks each keeps its own 1/N of it (buffer_size, min_size and
    sample_size divided by the world size), filled with its own samples and drawn from with a random
    stream of its own (one process: the run's seed)."""
    if not cfg.replay.enabled:
        return None
    ctx = ctx or DistContext()
    share = cfg.replay
    if ctx.enabled:
        share = replace(share, **{f: getattr(share, f) // ctx.world_size for f in ("buffer_size", "min_size", "sample_size")})
    buffer = ReplayBuffer(
        share,
        prompt_width=cfg.task.max_prompt_tokens,
        response_width=cfg.generation.max_new_tokens,
        vocab_size=len(inputs.tokenizer),
        with_ref=models.has_reference,
        seed=cfg.seed if not ctx.enabled else int(np.random.SeedSequence([cfg.seed, ctx.rank]).generate_state(1)[0]),
    )
    return ExperienceReplay(share, buffer, inputs.tokenizer.pad_token_id, device, ctx)


def build_generation_engine(cfg: TrainConfig, models: Models, inputs: RunInputs, device: torch.device, ctx: DistContext) -> GenerationEngine:
    """What samples the rollouts (generation.engine), sized for the longest prompt and one rank's
    share of a batch (validation batches are the same size)."""
    longest = max(len(ids) for ids in [*inputs.prompt_ids, *inputs.val_prompt_ids])
    return build_engine(
        cfg, models, device, ctx, max_len=longest + cfg.generation.max_new_tokens, max_rows=cfg.algo.rollout_batch_size // ctx.world_size
    )


def autocast_context(cfg: TrainConfig, device: torch.device) -> Callable:
    """A zero-argument factory of the forward passes' autocast context (nullcontext when off)."""
    if cfg.trainer.autocast is Autocast.off:
        return nullcontext
    if cfg.trainer.autocast is Autocast.float16 and device.type != "cuda":
        raise ConfigError("trainer.autocast: float16 autocast needs a CUDA device; use bfloat16 on CPU")
    dtype = torch.bfloat16 if cfg.trainer.autocast is Autocast.bfloat16 else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def model_threads(cfg: TrainConfig, device: torch.device, ctx: DistContext | None = None) -> ModelThreads | None:
    """The worker pair for trainer.concurrent_models, or None where it does not apply (also with
    several ranks: two threads' collectives on one process group could interleave differently)."""
    threads = torch.get_num_threads()
    if not cfg.trainer.concurrent_models or device.type != "cpu" or threads < 2 or (ctx is not None and ctx.enabled):
        return None
    return shared_model_threads(threads // 2)
