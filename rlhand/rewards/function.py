"""Custom rewards: any callable named by `reward.function._target_`.

The interface: `fn(prompts, responses, *, prompt_ids, response_ids) -> sequence of numbers`, one per
sample (a list, tuple, numpy array or tensor; bools count as 0/1). `prompts` / `responses` are
decoded text (the response stops before EOS); the `*_ids` are the same as lists of token ids. A
function may take only what it needs and swallow the rest with **kwargs. If `_target_` names a
class, it is built once with the other keys and then called.
"""

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
    return (lambda *a, **kw: obj(*a, **extra, **kw)) if extra else obj


class FunctionScorer:
    def __init__(self, fn: Callable, tokenizer: PreTrainedTokenizerBase, name: str = "reward function"):
        self.fn, self.tokenizer, self.name = fn, tokenizer, name

    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor) -> Tensor:
        prompts, responses, prompt_lists, response_lists = decode_texts(self.tokenizer, prompt_ids, prompt_mask, response_ids, response_mask, ended)
        result = self.fn(prompts, responses, prompt_ids=prompt_lists, response_ids=response_lists)
        scores = checked_scores(result, responses, self.name)
        return torch.tensor(scores, dtype=torch.float32, device=response_ids.device)


def decode_texts(tokenizer, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor):
    """(prompt texts, response texts, their id lists): what every text scorer (a function, a reward
    model with its own tokenizer, a server) reads. The response stops before EOS: what was said, not
    the stop token; no clean-up of spaces, so the text is as generated (" ." stays " .")."""
    prompt_lists = [row[mask.bool()].tolist() for row, mask in zip(prompt_ids.cpu(), prompt_mask.cpu())]
    lengths = (response_mask.sum(dim=1) - ended.long()).cpu().tolist()
    response_lists = [row[:n].tolist() for row, n in zip(response_ids.cpu(), lengths)]
    prompts = tokenizer.batch_decode(prompt_lists, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    responses = tokenizer.batch_decode(response_lists, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return prompts, responses, prompt_lists, response_lists


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
