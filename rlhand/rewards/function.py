"""Custom rewards: any callable named by `reward.function._target_`.

The interface: `fn(prompts, responses, *, prompt_ids, response_ids, **columns) -> sequence of
numbers`, one per sample (a list, tuple, numpy array or tensor; bools count as 0/1):

- `prompts`: each prompt as text. A text prompt is decoded as it was written; a conversation is its
  chat-template rendering, control tokens included (`<|im_start|>user\n...<|im_start|>assistant\n`),
  exactly what the policy was prompted with.
- `responses`: each response as text, up to (not including) the EOS it ended with.
- `prompt_ids`, `response_ids`: the same as lists of token ids (the prompt's rendered ids, ending in
  the generation prompt).
- `messages`: each prompt's message list (None for a text prompt), when the prompts are conversations.
- `labels`: each prompt's ground truth, when task.label_column names it.
- every other column of the prompt file, by its name, one value per sample as the file holds it
  (TRL's convention; verl's `data_source`, `reward_model` dict, `extra_info`). With
  generation.samples_per_prompt > 1 a prompt's values repeat for each of its responses.

A function may take only what it needs and swallow the rest with **kwargs. If `_target_` names a
class, it is built once with the other keys and then called. For a sample it cannot score (a label its
verifier cannot read) it returns `rlhand.rewards.unscored.Unscored("why")` in that sample's place.

Limits (FunctionLimits, from reward.*): a call runs under reward.timeout_s; past it, or if the function
raises, the run stops with one line naming it. With reward.workers=N each sample is scored alone in a
worker process under the limit, and a sample that times out or fails scores reward.failure_score and
is counted in reward/timeouts or reward/errors (reward.on_failure=stop ends the run instead), as is an
Unscored sample in either mode.
"""

import functools
import inspect
import math
import numbers
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from hydra.utils import get_object, instantiate
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from rlhand.errors import RewardError, UserError
from rlhand.rewards.time_limit import CallTimedOut, time_limit
from rlhand.rewards.unscored import Unscored
from rlhand.rewards.workers import WorkerPool

NAMED_FAILURES = 3  # the first few failed samples are named on stderr; the rest only counted


def resolve_reward_function(spec: dict[str, Any], field: str = "reward.function") -> Callable:
    """Import `_target_` now, before any model loads, so a typo fails fast with its name."""
    target = spec["_target_"]
    try:
        obj = get_object(target)
    except Exception:
        raise RewardError(f"{field}._target_: cannot import {target!r}") from None
    if inspect.isclass(obj):
        return instantiate(spec)
    if not callable(obj):
        raise RewardError(f"{field}._target_: {target!r} is not callable")
    extra = {k: v for k, v in spec.items() if k != "_target_"}
    return functools.partial(obj, **extra) if extra else obj


def accepted_keywords(fn: Callable) -> set[str] | None:
    """The keyword arguments `fn` names, or None when it takes **kwargs (or cannot be inspected)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


@dataclass(frozen=True)
class FunctionLimits:
    """What bounds a reward function (reward.timeout_s, workers, failure_score, on_failure)."""

    timeout_s: float | None = None  # None: unbounded
    workers: int = 0  # 0: batches scored in the training process
    failure_score: float = 0.0
    stop_on_failure: bool = False
    spec: dict = field(default_factory=dict)  # the function's _target_ and arguments, for the workers


class FunctionScorer:
    def __init__(self, fn: Callable, tokenizer: PreTrainedTokenizerBase, name: str = "reward function", limits: FunctionLimits | None = None):
        self.fn, self.tokenizer, self.name = fn, tokenizer, name
        self.limits = limits or FunctionLimits()
        self.takes = accepted_keywords(fn)
        # Arguments set in the config (reward.function.answer=boxed) are not replaced by a column of
        # the same name: the column is left out, said once.
        self.configured = set(getattr(fn, "keywords", None) or {})
        self.shadowed_said = False
        self.pool = WorkerPool(self.limits.spec, self.limits.workers, self.limits.timeout_s, name) if self.limits.workers else None
        self.failures = {"timeouts": 0, "errors": 0}  # since the last failure_counts()
        self.named = 0

    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor, rows=None) -> Tensor:
        prompts, responses, prompt_lists, response_lists = decode_texts(self.tokenizer, prompt_ids, prompt_mask, response_ids, response_mask, ended, rows)
        arguments = {"prompt_ids": prompt_lists, "response_ids": response_lists, **row_arguments(rows)}
        if self.takes is not None:  # no **kwargs: what it names, so a function written before columns keeps working
            arguments = {k: v for k, v in arguments.items() if k in self.takes}
        shadowed = self.configured & set(arguments)
        if shadowed:
            arguments = {k: v for k, v in arguments.items() if k not in shadowed}
            if not self.shadowed_said:
                self.shadowed_said = True
                print(f"rlhand: {self.name}: column {', '.join(sorted(shadowed))} not passed: the config sets that argument", file=sys.stderr, flush=True)
        if self.pool is not None:
            result = self.in_workers(prompts, responses, arguments, rows)
        else:
            result = self.in_process(prompts, responses, arguments)
        scores = checked_scores(result, responses, self.name, lambda i, reason: self.failed(i, "errors", reason, rows))
        return torch.tensor(scores, dtype=torch.float32, device=response_ids.device)

    def in_process(self, prompts: list[str], responses: list[str], arguments: dict) -> Any:
        """One call for the batch, under reward.timeout_s; a raise or a timeout stops the run."""
        limit = self.limits.timeout_s
        try:
            with time_limit(limit, self.name):
                return self.fn(prompts, responses, **arguments)
        except CallTimedOut:
            raise RewardError(f"{self.name} did not return within reward.timeout_s={limit:g} (scoring {len(responses)} samples; raise the limit, or reward.workers=N bounds each sample)") from None
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as err:
            raise RewardError(f"{self.name} raised {type(err).__name__}: {first_line_of(err)}") from None

    def in_workers(self, prompts: list[str], responses: list[str], arguments: dict, rows) -> list:
        """Each sample alone in a worker; a failed one scores reward.failure_score (or stops the run)."""
        samples = [(p, r, {k: [v[i]] for k, v in arguments.items()}) for i, (p, r) in enumerate(zip(prompts, responses))]
        outcomes = self.pool.score(samples)
        if outcomes and all(o.failure == "error" for o in outcomes):
            # Not one sample's fault but the function's (a bad argument, a missing column): stop, as in process.
            raise RewardError(f"{self.name} failed on every sample of the batch, e.g. {outcomes[0].reason}")
        values = []
        for i, outcome in enumerate(outcomes):
            if outcome.failure is None:
                values.append(outcome.value)
            else:
                values.append(self.failed(i, "timeouts" if outcome.failure == "timeout" else "errors", outcome.reason, rows))
        return values

    def failed(self, i: int, kind: str, reason: str, rows) -> float:
        """A sample this function did not score: counted (reward/timeouts, reward/errors), named on
        stderr for the first few, scored reward.failure_score, or the run stops (on_failure=stop)."""
        where = rows[i].where if rows and rows[i] is not None else f"sample {i} of the batch"
        if self.limits.stop_on_failure:
            raise RewardError(f"{self.name}: {where}: {reason} (reward.on_failure=stop)")
        self.failures[kind] += 1
        if self.named < NAMED_FAILURES:
            self.named += 1
            more = "; later ones are only counted" if self.named == NAMED_FAILURES else ""
            print(f"rlhand: {self.name}: {where}: {reason}; scored reward.failure_score={self.limits.failure_score:g}, counted in reward/{kind}{more}", file=sys.stderr, flush=True)
        return self.limits.failure_score

    def failure_counts(self) -> dict[str, int]:
        """reward/timeouts and reward/errors since the last call (this process's)."""
        counts, self.failures = self.failures, {"timeouts": 0, "errors": 0}
        return counts

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def function_scorers(scorer) -> list[FunctionScorer]:
    """The reward functions inside a run's scorer (normalised, combined with components)."""
    if isinstance(scorer, FunctionScorer):
        return [scorer]
    found = function_scorers(getattr(scorer, "inner", None)) if hasattr(scorer, "inner") else []
    if hasattr(scorer, "main"):
        found += function_scorers(scorer.main)
        for part, _ in getattr(scorer, "components", {}).values():
            found += function_scorers(part)
    return found


def failure_stats(scorer, reducer) -> dict[str, float]:
    """reward/timeouts and reward/errors: samples the run's reward functions did not score since the
    last call, summed over every rank (none when the reward is no function)."""
    scorers = function_scorers(scorer)
    if not scorers:
        return {}
    counts = [s.failure_counts() for s in scorers]
    local = torch.tensor([sum(c["timeouts"] for c in counts), sum(c["errors"] for c in counts)], dtype=torch.float64)
    total = reducer.sum(local)
    return {"reward/timeouts": total[0].item(), "reward/errors": total[1].item()}


def first_line_of(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"


def decode_texts(tokenizer, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor, rows=None):
    """(prompt texts, response texts, their id lists): what every text scorer (a function, a reward
    model with its own tokenizer, a server) reads. A text prompt is decoded without special tokens (a
    BOS the tokenizer added is not the user's), a conversation's rendering with them (its control
    tokens are the format). The response stops before EOS: what was said, not the stop token; no
    clean-up of spaces, so the text is as generated (" ." stays " .")."""
    prompt_lists = [row[mask.bool()].tolist() for row, mask in zip(prompt_ids.cpu(), prompt_mask.cpu())]
    lengths = (response_mask.sum(dim=1) - ended.long()).cpu().tolist()
    response_lists = [row[:n].tolist() for row, n in zip(response_ids.cpu(), lengths)]
    rendered = [row is not None and row.rendered for row in rows] if rows is not None else [False] * len(prompt_lists)
    prompts = [tokenizer.decode(ids, skip_special_tokens=not kept, clean_up_tokenization_spaces=False) for ids, kept in zip(prompt_lists, rendered)]
    responses = tokenizer.batch_decode(response_lists, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return prompts, responses, prompt_lists, response_lists


def row_arguments(rows) -> dict[str, list]:
    """What a reward function receives from the prompts' rows beyond the texts and ids: `messages`
    (conversations), `labels` (task.label_column) and every other column, one list each."""
    if not rows:
        return {}
    out = {}
    if any(row.is_conversation for row in rows):
        out["messages"] = [row.messages for row in rows]
    if any(row.label is not None for row in rows):
        out["labels"] = [row.label for row in rows]
    names = list(dict.fromkeys(name for row in rows for name in row.columns))
    for name in names:
        out[name] = [row.columns.get(name) for row in rows]
    return out


def checked_scores(result: Any, responses: list[str], name: str, unscored: Callable[[int, str], float] | None = None) -> list[float]:
    """One finite float per sample, or a RewardError saying which sample got what. An Unscored
    sample scores what `unscored(index, reason)` says (a RewardError where none is given)."""
    if isinstance(result, (torch.Tensor, np.ndarray)):
        if result.ndim != 1:
            raise RewardError(f"{name} returned an array of shape {tuple(result.shape)}; it must return one number per sample ({len(responses)})")
        result = result.tolist()
    if isinstance(result, (str, bytes)) or not hasattr(result, "__len__"):
        raise RewardError(f"{name} returned {type(result).__name__}; it must return a sequence of {len(responses)} numbers")
    if len(result) != len(responses):
        raise RewardError(f"{name} returned {len(result)} scores for {len(responses)} samples")
    scores = []
    for i, score in enumerate(result):
        if isinstance(score, (torch.Tensor, np.ndarray)) and score.ndim == 0:
            score = score.item()
        if isinstance(score, Unscored):
            if unscored is None:
                raise RewardError(f"{name} could not score sample {i}: {score.reason}")
            score = unscored(i, score.reason)
        if not isinstance(score, numbers.Real):  # numpy scalars register as numbers.Real; bools are 0/1
            raise RewardError(f"{name} returned {score!r} ({type(score).__name__}) for sample {i}; scores must be numbers")
        if not math.isfinite(score):
            raise RewardError(f"{name} returned {score} for sample {i} (response {responses[i][:60]!r}); scores must be finite")
        scores.append(float(score))
    return scores
