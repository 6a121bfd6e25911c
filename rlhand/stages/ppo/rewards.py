"""The RL stage's rewards as scorers: the run's own (a reward model, a server or a function under
reward.* limits), the limits of the other functions it calls (components, eval.scorers), and the
check that a grader has labels to grade against."""

from dataclasses import replace
from typing import Callable

from rlhand.config.load import ConfigError
from rlhand.config.schema import OnFailure, RewardKind, TrainConfig
from rlhand.data.prompts import Prompt
from rlhand.rewards.function import FunctionLimits
from rlhand.rewards.specs import PreparedScorer


def main_reward(cfg: TrainConfig, reward_fn: Callable | None, reward_tokenizer=None) -> PreparedScorer:
    """The run's own reward as a named scorer (rlhand/rewards/specs.py builds it as it builds the
    components): a reward model (the run's, loaded with the others), a server or a function."""
    r = cfg.reward
    if r.kind is RewardKind.model:
        spec = {"model": cfg.model.reward_model or "the built-in reward model", "chat_template": r.chat_template.value}
        return PreparedScorer("model.reward_model", spec, tokenizer=reward_tokenizer)  # None: the policy's ids straight through
    if r.kind is RewardKind.remote:
        return PreparedScorer("reward", {"url": r.url, "timeout_s": r.timeout_s, "retries": r.retries, "request_size": r.request_size, "in_flight": r.in_flight})
    limits = replace(call_limits(cfg), workers=r.workers, spec=dict(r.function))  # the run's own reward may score in workers
    return PreparedScorer(f"reward function {r.function['_target_']}", r.function, function=reward_fn, limits=limits)


def call_limits(cfg: TrainConfig) -> FunctionLimits:
    """The limits of a component's or validation scorer's function: reward.timeout_s per call and
    the run's failure policy; they score in the training process (workers are the run's reward's)."""
    r = cfg.reward
    return FunctionLimits(r.timeout_s or None, 0, r.failure_score, r.on_failure is OnFailure.stop)


def check_labels(fn: Callable | None, prompts: list[Prompt], field: str, cfg: TrainConfig) -> None:
    """A grader (a function marked needs_labels, e.g. reward=math) on prompts without ground truth
    would score every sample as a failure: one line before any model loads instead."""
    target = getattr(fn, "func", fn)  # through functools.partial (a function's arguments)
    if getattr(target, "needs_labels", False) and all(p.label is None for p in prompts):
        where = "task.label_column is not set" if not cfg.task.label_column else f"no prompt has a value in {cfg.task.label_column!r}"
        name = f"{target.__module__}.{target.__qualname__}"
        raise ConfigError(f"{field}: {name} grades each response against its prompt's label, but {where}; set task.label_column to the ground-truth column")
