"""What stage=sft and stage=reward_model share: one trained model, examples drawn in seeded
shuffled passes (part of the resumable state), each rank taking its share of every batch, a loss
normalised over all ranks' tokens or pairs, validation over held-out examples. A subclass says how
its data loads, which model it trains, its loss and statistics and what it saves
(rlhand/stages/sft/, rlhand/stages/reward_model/). The run around it is rlhand/run/lifecycle.py.

A rank's share of a batch goes through in micro-batches (<section>.micro_batch_size and
micro_batch_tokens), every rank as many, their gradients accumulated into one optimizer step: each
micro-batch's loss is normalised by the whole batch's count (every rank's tokens or pairs, known
from the batch itself), so the step is the one a single forward of the whole batch would give."""

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from rlhand.checkpoint.atomic import atomic_dir
from rlhand.config.load import ConfigError
from rlhand.config.schema import Autocast, FitCheck, ModelSource, TrainConfig
from rlhand.config.stages import learning_rate
from rlhand.data.micro_batches import micro_batches
from rlhand.data.mixture import build_sampler, load_mixture, mixture_counts
from rlhand.data.prompts import split_holdout
from rlhand.distributed.layout import Parallel
from rlhand.distributed.sharding import full_state_dict, shard_model
from rlhand.models.fit import check_fit
from rlhand.models.fit_supervised import estimate_supervised
from rlhand.models.folders import save_trained_model
from rlhand.run.learners import Learners, adamw_learner
from rlhand.run.stage import RunEnv
from rlhand.stages.inputs import stage_stop_ids, stage_tokenizer


@dataclass
class SupervisedInputs:
    tokenizer: PreTrainedTokenizerBase
    train: list  # examples or pairs, in file order
    val: list  # empty unless eval.every > 0
    labels: list[int] | None = None  # a mixture: each training item's source
    sources: list[str] | None = None  # a mixture's source names, and their weights
    weights: list[float] | None = None
    dropped: int = 0  # items over the stage's limits left out (<section>.truncation=drop)


class SupervisedStage:
    section: str  # the config section: "sft" or "rm"
    learner: str  # what the checkpoint and final/ call the trained model

    @classmethod
    def load(cls, cfg: TrainConfig, tokenizer, path: str | None, stop_ids: tuple[int, ...]) -> tuple[list, int]:
        """(the items of `path` (None: the built-in task's), how many truncation=drop left out)."""

    @classmethod
    def stage_tokenizer(cls, cfg: TrainConfig):
        """(the tokenizer, the ids a response ends at)."""
        tokenizer = stage_tokenizer(cfg)
        return tokenizer, stage_stop_ids(cfg, tokenizer)

    @classmethod
    def prepare(cls, cfg: TrainConfig, ctx, device: torch.device) -> SupervisedInputs:
        settings = getattr(cfg, cls.section)
        if settings.batch_size % ctx.world_size:
            raise ConfigError(f"{cls.section}.batch_size: {settings.batch_size} does not split over {ctx.world_size} ranks")
        tokenizer, stop_ids = cls.stage_tokenizer(cfg)
        dropped = []

        def load(path):
            items, count = cls.load(cfg, tokenizer, path, stop_ids)
            dropped.append(count)
            if not items:
                raise ConfigError(f"{path or 'the built-in data'}: every example is over {cls.section}.max_prompt_tokens / max_completion_tokens ({cls.section}.truncation={settings.truncation.value})")
            return items

        sources = weights = None
        if settings.mixture:
            train, labels, sources, weights = load_mixture(settings.mixture, load)
        else:
            train = load(settings.path)
            labels = [0] * len(train)
        val = []
        if cfg.eval.every > 0:
            if settings.val_path:
                val = load(settings.val_path)  # every row: a test set is scored whole
            else:
                kept, held = split_holdout(list(zip(train, labels)), cfg.eval.num_prompts, cfg.seed)
                train, labels, val = [t for t, _ in kept], [label for _, label in kept], [t for t, _ in held]
            if len(val) % ctx.world_size:
                raise ConfigError(f"{cls.section}.val_path: its {len(val)} held-out examples do not split over {ctx.world_size} ranks")
        cls.check_lengths(cfg, train + val)
        if sources:
            empty = [name for s, name in enumerate(sources) if s not in set(labels)]
            if empty:
                raise ConfigError(f"{cls.section}.mixture.{empty[0]}: no examples left to train on after the {cfg.eval.num_prompts} held out")
        if sum(dropped) and ctx.is_main:
            print(f"rlhand: {sum(dropped)} examples over {cls.section}.max_prompt_tokens / max_completion_tokens left out ({cls.section}.truncation=drop)", file=sys.stderr, flush=True)
        return SupervisedInputs(tokenizer, train, val, labels if sources else None, sources, weights, sum(dropped))

    @classmethod
    def check_lengths(cls, cfg: TrainConfig, items: list) -> None:
        """The built-in tiny model has model.n_positions positions: a longer example is an error naming it."""
        if cfg.model.source is not ModelSource.tiny or not items:
            return
        longest = max(items, key=cls.length)
        if cls.length(longest) > cfg.model.n_positions:
            raise ConfigError(f"{longest.where}: {cls.length(longest)} tokens > model.n_positions={cfg.model.n_positions}")

    @staticmethod
    def length(item) -> int:
        """Tokens of the longest sequence an item gives a forward."""

    @classmethod
    def rank_local_state(cls, cfg: TrainConfig) -> bool:
        return False

    @classmethod
    def check_memory(cls, cfg: TrainConfig, inputs: SupervisedInputs, env: RunEnv) -> str:
        """The estimate for one trained model and no rollout (rlhand/models/fit_supervised.py), on
        the console before any model loads, and an error if it is over the device (trainer.fit_check)."""
        if cfg.trainer.fit_check is FitCheck.off:
            return "memory estimate: off (trainer.fit_check=off)"
        items = inputs.train + inputs.val
        lengths = [cls.length(item) for item in items]
        scored = max((cls.scored_tokens(item) for item in items), default=0)
        line = check_fit(estimate_supervised(cfg, inputs.tokenizer, lengths, scored, env.layout, env.device, cls.learner), cfg)
        if env.ctx.is_main:
            print(line, file=sys.stderr, flush=True)
        return line

    @staticmethod
    def scored_tokens(item) -> int:
        """Positions of one example the output layer computes (0: none, a reward model's score head)."""
        return 0

    def __init__(self, cfg: TrainConfig, inputs: SupervisedInputs, env: RunEnv):
        self.cfg, self.inputs, self.env, self.dist = cfg, inputs, env, env.ctx
        self.settings = getattr(cfg, self.section)
        self.model = self.build_model(cfg, inputs.tokenizer, env.device)
        if env.layout.strategy is Parallel.fsdp:
            param_dtype = {Autocast.bfloat16: torch.bfloat16, Autocast.float16: torch.float16}.get(cfg.trainer.autocast)
            shard_model(self.model, self.dist, env.device, param_dtype, cfg.trainer.offload)
        # The optimizer's eps, weight decay and gradient clipping are algo.*'s, as in the RL stage.
        learner = adamw_learner(self.model, learning_rate(cfg.stage, self.settings, cfg.model.source.value), cfg.algo, self.dist, env.layout.sums_gradients)
        self.learners = Learners.of(**{self.learner: learner})
        self.sampler = build_sampler(inputs.labels, inputs.weights, len(inputs.train), cfg.seed)
        self.seen = 0

    def build_model(self, cfg: TrainConfig, tokenizer, device: torch.device): ...

    def count(self, items: list) -> float:
        """What the loss is normalised by: the trained tokens (sft) or pairs (reward_model) of `items`."""

    def losses(self, batch: list, total: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(this micro-batch's share of the whole batch's loss, whose count is `total`; its additive
        statistics: float64 sums that from_sums turns into figures)."""

    def padded_tokens(self, items: list) -> int:
        """Tokens one forward of `items` holds, padding included (micro_batch_tokens counts these)."""

    def describe(self) -> str:
        data = self.settings.path or (f"a mixture of {', '.join(self.inputs.sources)}" if self.inputs.sources else f"the built-in {self.cfg.task.name} data")
        return f"rlhand: {self.cfg.stage.value} on {data} ({len(self.inputs.train)} examples, {len(self.inputs.val)} held out)"

    def plot_title(self) -> str:
        return f"{self.cfg.stage.value} / seed {self.cfg.seed}"

    def start(self) -> None:
        pass

    def micro_batches(self, items: list) -> list[list]:
        """`items` (this rank's share) in as many micro-batches as the rank needing most makes:
        every rank runs the same number of forwards and backwards (their collectives pair up)."""
        parts = micro_batches(items, self.settings.micro_batch_size, self.settings.micro_batch_tokens, self.padded_tokens)
        needed = int(self.dist.max(torch.tensor(len(parts))).item())
        while len(parts) < needed:  # split the largest part: every rank has as many items, so this ends
            largest = max(range(len(parts)), key=lambda i: len(parts[i]))
            half = len(parts[largest]) // 2
            parts[largest : largest + 1] = [parts[largest][:half], parts[largest][half:]]
        return parts

    def step(self, step: int) -> dict:
        started = time.perf_counter()
        indices = self.sampler.next_indices(self.settings.batch_size)  # every rank draws the same batch
        everyone = [self.inputs.train[i] for i in indices]
        total = self.count(everyone)  # every rank's count, from the batch itself: no collective
        learner = self.learners.all()[0]
        learner.zero_grad()
        sums: dict[str, torch.Tensor] = {}
        with learner.training():  # the backward too: checkpointed blocks recompute in train mode
            for part in self.micro_batches(everyone[self.dist.shard(len(indices))]):  # this rank's share
                with self.env.autocast():
                    loss, part_sums = self.losses(part, total)
                learner.backward(loss)
                for key, value in part_sums.items():
                    sums[key] = sums.get(key, 0) + value
        norm = learner.step()
        self.seen += len(indices)
        keys = sorted(sums)
        stats = self.from_sums(self.dist.sum(torch.stack([sums[k] for k in keys])), keys)
        figures = {f"train/{k}": float(v) for k, v in stats.items()}
        return {
            **figures,
            "train/grad_norm": float(norm),
            "train/examples_seen": self.seen,
            "train/epoch": self.seen / len(self.inputs.train),
            **mixture_counts(self.sampler, self.inputs.sources or []),
            **self.dist.slowest({"time/iteration_s": time.perf_counter() - started}),
        }

    @torch.no_grad()
    def validate(self, step: int) -> dict:
        mine = self.inputs.val[self.dist.shard(len(self.inputs.val))]
        rows = self.settings.batch_size // self.dist.world_size
        totals: dict[str, torch.Tensor] = {}
        with self.env.autocast():
            for start in range(0, len(mine), rows):
                for part in self.micro_batches(mine[start : start + rows]):
                    for key, value in self.losses(part, 1.0)[1].items():
                        totals[key] = totals.get(key, 0) + value
        keys = sorted(totals)
        stats = self.from_sums(self.dist.sum(torch.stack([totals[k] for k in keys])), keys)
        return {f"val/{k}": float(v) for k, v in stats.items()}

    def from_sums(self, summed: torch.Tensor, keys: list[str]) -> dict[str, torch.Tensor]: ...

    def samples(self) -> list[dict]:
        return []  # the supervised stages generate nothing

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.seen = state["seen"]

    def rank_state_dict(self):
        return None

    def load_rank_state_dict(self, state) -> None:
        pass

    def save(self, folder: Path, meta: dict | None = None) -> str:
        """folder/<learner>: a transformers folder with the tokenizer (LoRA: merged, and the adapter)."""
        import json

        state = full_state_dict(self.model, self.dist)
        extra = self.extra_files()
        if self.dist.is_main:
            with atomic_dir(folder) as tmp:
                save_trained_model(self.model, tmp / self.learner, state, self.inputs.tokenizer)
                for name, content in extra.items():
                    (tmp / self.learner / name).write_text(json.dumps(content, indent=1), encoding="utf-8")
                if meta is not None:
                    (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        self.dist.barrier()
        return self.learner

    def extra_files(self) -> dict[str, dict]:
        """JSON files saved beside the model (every rank computes them; rank 0 writes)."""
        return {}

    def summary(self, history: list[dict]) -> str:
        if not history:
            return "no steps run"
        last = history[-1]
        shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k.startswith(("train/", "val/")) and isinstance(v, float) and math.isfinite(v))
        return f"step {last['step']}: {shown}"

    def close(self) -> None:
        pass
