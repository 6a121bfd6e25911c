"""Custom rewards: any callable named by `reward.function._target_`.

The interface: `fn(prompts, responses, *, prompt_ids, response_ids) -> sequence of floats`, one per
sample. `prompts` / `responses` are decoded text (the response stops before EOS); the `*_ids` are
the same as lists of token ids. A function may take only what it needs and swallow the rest with
**kwargs. If `_target_` names a class, it is built once with the other keys and then called.
"""

import inspect
import math
from typing import Any, Callable

import torch
from hydra.utils import get_object, instantiate
from torch import Tensor
from transformers import PreTrainedTokenizerBase


def resolve_reward_function(spec: dict[str, Any]) -> Callable:
    """Import `_target_` now, before any model loads, so a typo fails fast with its name."""
    target = spec["_target_"]
    try:
        obj = get_object(target)
    except Exception:
        raise ValueError(f"reward.function._target_: cannot import {target!r}") from None
    if inspect.isclass(obj):
        return instantiate(spec)
    if not callable(obj):
        raise ValueError(f"reward.function._target_: {target!r} is not callable")
    extra = {k: v for k, v in spec.items() if k != "_target_"}
    return (lambda *a, **kw: obj(*a, **extra, **kw)) if extra else obj


class FunctionScorer:
    def __init__(self, fn: Callable, tokenizer: PreTrainedTokenizerBase):
        self.fn, self.tokenizer = fn, tokenizer

    def __call__(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, ended: Tensor) -> Tensor:
        prompt_lists = [row[mask.bool()].tolist() for row, mask in zip(prompt_ids.cpu(), prompt_mask.cpu())]
        # Text stops before EOS: the function judges what was said, not the stop token.
        lengths = (response_mask.sum(dim=1) - ended.long()).cpu().tolist()
        response_lists = [row[:n].tolist() for row, n in zip(response_ids.cpu(), lengths)]
        # No clean-up of spaces: the function sees the text as generated (" ." stays " .").
        prompts = self.tokenizer.batch_decode(prompt_lists, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        responses = self.tokenizer.batch_decode(response_lists, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        scores = list(self.fn(prompts, responses, prompt_ids=prompt_lists, response_ids=response_lists))
        if len(scores) != len(prompts):
            raise ValueError(f"reward function returned {len(scores)} scores for {len(prompts)} samples")
        if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores):
            raise ValueError("reward function returned a non-finite or non-numeric score")
        return torch.tensor(scores, dtype=torch.float32, device=response_ids.device)
