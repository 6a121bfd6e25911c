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
class, it is built once with the other keys and then called.
"""

import functools
import inspect
import math
import numbers
from typing import Any, Callable

import numpy as np
import torch
from hydra.utils import get_object, instantiate
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from rlhand.errors import RewardError


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


class FunctionScorer:
    def __init__(self, fn: Callable, tokenizer: PreTrainedTokenizerBase, name: str = "reward function"):
        self.fn, self.tokenizer, self.name = fn, tokenizer, name
        self.takes = accepted_keywords(fn)

    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor, rows=None) -> Tensor:
        prompts, responses, prompt_lists, response_lists = decode_texts(self.tokenizer, prompt_ids, prompt_mask, response_ids, response_mask, ended, rows)
        arguments = {"prompt_ids": prompt_lists, "response_ids": response_lists, **row_arguments(rows)}
        if self.takes is not None:  # no **kwargs: what it names, so a function written before columns keeps working
            arguments = {k: v for k, v in arguments.items() if k in self.takes}
        result = self.fn(prompts, responses, **arguments)
        scores = checked_scores(result, responses, self.name)
        return torch.tensor(scores, dtype=torch.float32, device=response_ids.device)


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


def checked_scores(result: Any, responses: list[str], name: str) -> list[float]:
    """One finite float per sample, or a RewardError saying which sample got what."""
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
        if not isinstance(score, numbers.Real):  # numpy scalars register as numbers.Real; bools are 0/1
            raise RewardError(f"{name} returned {score!r} ({type(score).__name__}) for sample {i}; scores must be numbers")
        if not math.isfinite(score):
            raise RewardError(f"{name} returned {score} for sample {i} (response {responses[i][:60]!r}); scores must be finite")
        scores.append(float(score))
    return scores
