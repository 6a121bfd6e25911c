"""Build a run from a TrainConfig: inputs that can be wrong are checked before any model loads."""

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from transformers import PreTrainedTokenizerBase

from rlhand.config.batch_layout import check_batch_layout
from rlhand.config.load import ConfigError
from rlhand.config.schema import (
    Autocast,
    FitCheck,
    KLControl,
    Normalize,
    RewardKind,
    TrainConfig,
)
from rlhand.core.kl import AdaptiveKLController, FixedKLController
from rlhand.core.masked import LOCAL, Reducer
from rlhand.data.mixture import load_mixture
from rlhand.data.prompts import Prompt, PromptFormat, encode_prompts, kept, load_prompts, read_prompt_file, split_holdout
from rlhand.distributed import context
from rlhand.distributed.context import DistContext
from rlhand.distributed.layout import Layout, Parallel
from rlhand.distributed.sharding import shard_model
from rlhand.errors import UserError
from rlhand.models.build import Models, build_models
from rlhand.models.concurrent import ModelThreads, shared_model_threads
from rlhand.models.fit import check_fit, estimate_memory
from rlhand.models.forward import ForwardLimits
from rlhand.models.loaders import policy_config
from rlhand.models.lora import check_targets
from rlhand.models.plan import model_plan
from rlhand.models.sources import check_model_sources
from rlhand.models.weights import frozen_dtype
from rlhand.replay.buffer import ReplayBuffer
from rlhand.replay.mixer import ExperienceReplay, NoReplay
from rlhand.rewards import resolve_reward_function, specs
from rlhand.rewards.combined import CombinedScorer
from rlhand.rewards.model import read_score_stats
from rlhand.rewards.normalize import NormalizedScorer
from rlhand.rewards.remote import check_reachable
from rlhand.rewards.retokenize import reward_model_tokenizer
from rlhand.rewards.specs import PreparedScorer
from rlhand.rollout.engines import GenerationEngine, build_engine
from rlhand.run.learners import Learners, adamw_learner
from rlhand.stages.inputs import stage_stop_ids, stage_tokenizer
from rlhand.stages.ppo.rewards import call_limits, check_labels, main_reward


@dataclass
class RunInputs:
    """Everything read from the config and disk that is cheap to check: no model yet."""

    tokenizer: PreTrainedTokenizerBase
    prompt_ids: list[list[int]]
    val_prompt_ids: list[list[int]]  # empty unless eval.every > 0
    val_sets: dict[str, list[list[int]]]  # eval.prompt_sets, encoded: name -> prompts
    reward_fn: Callable | None
    val_scorers: dict[str, PreparedScorer]  # eval.scorers, checked
    prompt_labels: list[int] | None = None  # task.mixture: each training prompt's source
    sources: list[str] | None = None  # task.mixture's names and weights
    weights: list[float] | None = None
    components: dict[str, tuple[PreparedScorer, float]] = field(default_factory=dict)  # reward.components, checked, with weights
    score_stats: tuple[float, float] | None = None  # reward.normalize=saved: the reward model's (mean, std)
    reward_tokenizer: PreTrainedTokenizerBase | None = None  # a reward model's own, when it is not the policy's
    # Each prompt as read, parallel to the ids above (its conversation, columns and label reach the scorers).
    prompts: list[Prompt] = field(default_factory=list)
    val_prompts: list[Prompt] = field(default_factory=list)
    val_set_prompts: dict[str, list[Prompt]] = field(default_factory=dict)
    stop_ids: tuple[int, ...] = ()  # the ids a response ends at: the tokenizer's EOS and generation_config's
    dropped: int = 0  # prompts over task.max_prompt_tokens left out (task.truncation=drop)


def check_layout(cfg: TrainConfig, ctx: DistContext) -> None:
    """Every rank takes an equal share of each batch (and of validation, and of the replay buffer):
    the config's batch-layout rules for this many ranks, one line naming the field, before anything loads."""
    try:
        check_batch_layout(cfg, ctx.world_size)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_memory(cfg: TrainConfig, inputs: RunInputs, ctx: DistContext, layout: Layout, device: torch.device) -> str:
    """The memory estimate, on the console now (before any model loads; rank 0), and an error if it
    is over the device's memory (trainer.fit_check)."""
    if cfg.trainer.fit_check is FitCheck.off:
        return "memory estimate: off (trainer.fit_check=off)"
    lengths = [len(ids) for ids in inputs.prompt_ids]
    line = check_fit(estimate_memory(cfg, inputs.tokenizer, lengths, layout, device), cfg)
    if ctx.is_main:
        print(line, file=sys.stderr, flush=True)
    return line


def distribute_models(cfg: TrainConfig, models: Models, ctx: DistContext, layout: Layout, device: torch.device) -> None:
    """Lay the models out over the ranks as the layout says (trainer.strategy, trainer.frozen_models)."""
    param_dtype = {Autocast.bfloat16: torch.bfloat16, Autocast.float16: torch.float16}.get(cfg.trainer.autocast)
    if layout.strategy is Parallel.fsdp:
        for trained in (models.policy, models.critic.module if models.has_critic else None):
            if trained is not None:
                shard_model(trained, ctx, device, param_dtype, cfg.trainer.offload)
    if layout.shard_frozen:
        for frozen in (models.ref, models.reward_model):
            if frozen is not None:
                shard_model(frozen, ctx, device, param_dtype)


def prepare_inputs(cfg: TrainConfig) -> RunInputs:
    check_model_sources(cfg.model, need_reward_model=cfg.reward.kind is RewardKind.model)
    tokenizer = stage_tokenizer(cfg)
    if cfg.model.lora.enabled and cfg.model.lora.target_modules:
        check_targets(cfg.model.lora, policy_config(cfg.model, tokenizer))
    reward_fn = resolve_reward_function(cfg.reward.function) if cfg.reward.kind is RewardKind.function else None
    if cfg.reward.kind is RewardKind.remote:
        check_reachable(cfg.reward.url)
    task = cfg.task
    ctx = context.current()

    def encoded(items: list[Prompt]) -> list[list[int] | None]:  # None: dropped (task.truncation=drop)
        return encode_prompts(tokenizer, items, task.max_prompt_tokens, task.truncation, chat_template=task.chat_template, system_prompt=task.system_prompt)

    prompts, train_ids, source_of, sources, weights, val_prompts, val_ids, dropped = task_prompts(cfg, encoded)
    check_labels(reward_fn, prompts, "reward.function", cfg)
    components = {name: (specs.prepare(spec, f"reward.components.{name}", call_limits(cfg)), float(spec["weight"])) for name, spec in cfg.reward.components.items()}
    for name, (prepared, _) in components.items():
        check_labels(prepared.function, prompts, f"reward.components.{name}", cfg)
    if len(val_prompts) % ctx.world_size:
        where = "task.val_path" if task.val_path else "eval.num_prompts"
        raise ConfigError(f"{where}: its {len(val_prompts)} validation prompts do not split over {ctx.world_size} ranks")
    val_sets, val_set_prompts = {}, {}
    for name, spec in cfg.eval.prompt_sets.items() if cfg.eval.every > 0 else ():
        try:
            read = read_prompt_file(spec["path"], PromptFormat.of(task, spec.get("prompt_column")))[: spec.get("num_prompts", cfg.eval.num_prompts)]
            val_set_prompts[name], val_sets[name], _ = kept(read, encoded(read))
        except UserError as err:
            raise ConfigError(f"eval.prompt_sets.{name}.path: {err}") from None
        if not val_sets[name]:
            raise ConfigError(f"eval.prompt_sets.{name}: every prompt is longer than task.max_prompt_tokens={task.max_prompt_tokens} (task.truncation=drop)")
        if len(val_sets[name]) % ctx.world_size:
            raise ConfigError(f"eval.prompt_sets.{name}: its {len(val_sets[name])} prompts do not split over {ctx.world_size} ranks")
    if dropped and ctx.is_main:
        print(f"rlhand: {dropped} prompts longer than task.max_prompt_tokens={task.max_prompt_tokens} left out (task.truncation=drop)", file=sys.stderr, flush=True)
    return RunInputs(
        val_sets=val_sets,
        tokenizer=tokenizer,
        prompt_ids=train_ids,
        val_prompt_ids=val_ids,
        reward_fn=reward_fn,
        score_stats=read_score_stats(cfg.model.reward_model) if cfg.reward.normalize is Normalize.saved else None,
        reward_tokenizer=reward_model_tokenizer(cfg, tokenizer),
        prompt_labels=source_of if sources else None,
        sources=sources,
        weights=weights,
        components=components,
        val_scorers=specs.prepare_all(cfg.eval.scorers, "eval.scorers", call_limits(cfg)) if cfg.eval.every > 0 else {},
        prompts=prompts,
        val_prompts=val_prompts,
        val_set_prompts=val_set_prompts,
        stop_ids=stage_stop_ids(cfg, tokenizer),
        dropped=dropped,
    )


def task_prompts(cfg: TrainConfig, encoded: Callable):
    """(training prompts and their ids, each one's mixture source, the mixture's names and weights or
    None, validation prompts and their ids, how many were dropped). Prompts are encoded (and those over
    the limit dropped, task.truncation=drop) before the validation hold-out, so that the held-out count
    and every mixture source are what trains."""
    task = cfg.task
    fmt = PromptFormat.of(task)
    sources = weights = None
    if task.mixture:
        prompts, source_of, sources, weights = load_mixture(task.mixture, lambda path: read_prompt_file(path, fmt))
    else:
        prompts = load_prompts(task, cfg.seed)
        source_of = [0] * len(prompts)
    ids = encoded(prompts)
    source_of = [source for source, i in zip(source_of, ids) if i is not None]
    prompts, ids, dropped = kept(prompts, ids)
    if not prompts:
        raise ConfigError(f"task.truncation: every prompt is longer than task.max_prompt_tokens={task.max_prompt_tokens} and was dropped")
    val_prompts, val_ids = [], []
    if cfg.eval.every > 0:
        if task.val_path:
            read = read_prompt_file(task.val_path, fmt)[: cfg.eval.num_prompts]
            val_prompts, val_ids, val_dropped = kept(read, encoded(read))
            dropped += val_dropped
        else:
            train, held = split_holdout(list(zip(prompts, ids, source_of)), cfg.eval.num_prompts, cfg.seed)
            prompts, ids, source_of = [p for p, _, _ in train], [i for _, i, _ in train], [s for _, _, s in train]
            val_prompts, val_ids = [p for p, _, _ in held], [i for _, i, _ in held]
    for s, name in enumerate(sources or []):
        if s not in set(source_of):
            raise ConfigError(f"task.mixture.{name}: no prompts left to train on after the {cfg.eval.num_prompts} held out and any dropped")
    return prompts, ids, source_of, sources, weights, val_prompts, val_ids, dropped


def prepare_models(cfg: TrainConfig, inputs: RunInputs, device: torch.device, reducer: Reducer = LOCAL) -> tuple[Models, Callable, NormalizedScorer]:
    """The models, the run's scorer (its reward, normalised, with any components) and the normaliser
    (its running statistics are checkpointed; validation scores with them frozen)."""
    models = build_models(cfg.model, inputs.tokenizer, model_plan(cfg), device)
    models.limits = forward_limits(cfg)
    r, max_tokens = cfg.reward, cfg.trainer.score_max_tokens
    scorer = specs.build(main_reward(cfg, inputs.reward_fn, inputs.reward_tokenizer), inputs.tokenizer, device, max_tokens=max_tokens, model=models.reward_model)
    normalized = scorer = NormalizedScorer(scorer, inputs.score_stats, running=r.normalize is Normalize.running, clip=r.clip, reducer=reducer)
    if inputs.components:
        built = {name: (specs.build(prepared, inputs.tokenizer, device, frozen_dtype(cfg.model), max_tokens), w) for name, (prepared, w) in inputs.components.items()}
        scorer = CombinedScorer(normalized, r.weight, built)
    return models, scorer, normalized


def build_val_scorers(cfg: TrainConfig, inputs: RunInputs, device: torch.device) -> dict[str, Callable]:
    """eval.scorers, built (a reward model among them loads now, frozen, whole on every rank)."""
    return specs.build_all(inputs.val_scorers, inputs.tokenizer, device, frozen_dtype(cfg.model), cfg.trainer.score_max_tokens)


def forward_limits(cfg: TrainConfig) -> ForwardLimits:
    mb = cfg.trainer.logits_chunk_mb
    return ForwardLimits(logit_chunk_bytes=None if mb is None else mb * 2**20, score_max_tokens=cfg.trainer.score_max_tokens)


def build_learners(cfg: TrainConfig, models: Models, ctx: DistContext | None = None, layout: Layout | None = None) -> Learners:
    """A learner per trained model, each with its own AdamW (separate learning rates) and clipping.
    Built after sharding: an optimizer over FSDP2's sharded parameters keeps sharded states."""
    algo, ctx = cfg.algo, ctx or DistContext()
    sums = layout is not None and layout.sums_gradients
    critic = adamw_learner(models.critic.module, algo.critic_lr or algo.lr, algo, ctx, sums) if models.has_critic else None
    return Learners.of(policy=adamw_learner(models.policy, algo.lr, algo, ctx, sums), critic=critic)


def build_kl_controller(cfg: TrainConfig) -> FixedKLController:
    algo = cfg.algo
    if algo.kl_control is KLControl.adaptive:
        return AdaptiveKLController(algo.kl_coef, algo.kl_target, algo.kl_horizon)
    return FixedKLController(algo.kl_coef)


def build_replay(cfg: TrainConfig, inputs: RunInputs, models: Models, device: torch.device, ctx: DistContext | None = None) -> ExperienceReplay | NoReplay:
    """The replay buffer; with several ranks each keeps its own 1/N of it (buffer_size, min_size and
    sample_size divided by the world size), filled with its own samples and drawn from with a random
    stream of its own (one process: the run's seed)."""
    if not cfg.replay.enabled:
        return NoReplay()
    ctx = ctx or DistContext()
    share = replace(cfg.replay, **{f: getattr(cfg.replay, f) // ctx.world_size for f in ("buffer_size", "min_size", "sample_size")})
    buffer = ReplayBuffer(
        share,
        prompt_width=cfg.task.max_prompt_tokens,
        response_width=cfg.generation.max_new_tokens,
        vocab_size=len(inputs.tokenizer),
        with_ref=models.has_reference,
        seed=ctx.rank_seed(cfg.seed),
    )
    return ExperienceReplay(share, buffer, inputs.tokenizer.pad_token_id, device, ctx, cfg.algo.is_truncation)


def build_generation_engine(cfg: TrainConfig, models: Models, inputs: RunInputs, device: torch.device, ctx: DistContext) -> GenerationEngine:
    """What samples the rollouts (generation.engine), sized for the longest prompt and one rank's
    share of a batch (validation batches are the same size)."""
    longest = max(len(ids) for ids in [*inputs.prompt_ids, *inputs.val_prompt_ids])
    return build_engine(
        cfg, models, device, ctx, max_len=longest + cfg.generation.max_new_tokens, max_rows=cfg.algo.rollout_batch_size // ctx.world_size
    )




def model_threads(cfg: TrainConfig, device: torch.device, layout: Layout) -> ModelThreads | None:
    """The worker pair for trainer.concurrent_models, or None where it does not apply (also with
    several ranks: two threads' collectives on one process group could interleave differently)."""
    threads = torch.get_num_threads()
    if not cfg.trainer.concurrent_models or device.type != "cpu" or threads < 2 or layout.strategy is not Parallel.single:
        return None
    return shared_model_threads(threads // 2)
