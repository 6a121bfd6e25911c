"""Reward-model preference pairs: chosen and rejected completions of a shared prompt, or whole
texts, or chat message lists (the common public layouts), tokenized and checked before any model
loads; an error names the file line."""

import math
from pathlib import Path
from typing import NamedTuple

from transformers import PreTrainedTokenizerBase

from rlhand.config.schema import TrainConfig
from rlhand.data.demonstrations import encode_completion, encode_prompt, split_messages
from rlhand.data.prompts import PromptError, read_rows
from rlhand.tasks import BUILTIN_PREFERENCES


class Pair(NamedTuple):
    where: str
    chosen: tuple[list[int], list[int]]  # (prompt ids, completion ids): scored at the completion's last token
    rejected: tuple[list[int], list[int]]
    margin: float


def load_preferences(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, path: str | None) -> list[Pair]:
    rm, task = cfg.rm, cfg.task
    if path is None:
        make = BUILTIN_PREFERENCES.get(task.name)
        if make is None:
            raise PromptError(f"rm.path: no preference pairs given, and task {task.name} has no built-in ones")
        made = make(rm.num_pairs, task.prompt_chars, rm.label_noise, cfg.seed)
        return [encode_pair(f"task {task.name}: pair {i}", (p, c, False), (p, r, False), 0.0, tokenizer, cfg) for i, (p, c, r) in enumerate(made)]
    pairs = []
    for where, row in read_rows(Path(path), "preference"):
        where = f"{path}: {where}"
        for column in [rm.chosen_column, rm.rejected_column] + [c for c in (rm.prompt_column, rm.margin_column) if c]:
            if column not in row:
                raise PromptError(f"{where}: no column {column!r} (found {sorted(row)}); set rm.{_setting(rm, column)}")
        prompt = row[rm.prompt_column] if rm.prompt_column else None
        chosen, rejected = (_texts(where, prompt, row[c], tokenizer, c) for c in (rm.chosen_column, rm.rejected_column))
        margin = _margin(where, row[rm.margin_column]) if rm.margin_column else 0.0
        pairs.append(encode_pair(where, chosen, rejected, margin, tokenizer, cfg))
    return pairs


def _margin(where: str, value) -> float:
    try:
        margin = float(value)
    except (TypeError, ValueError):
        margin = math.nan
    if not math.isfinite(margin):
        raise PromptError(f"{where}: the margin {value!r} is not a finite number")
    return margin


def _setting(rm, column: str) -> str:
    return next(name for name in ("chosen_column", "rejected_column", "prompt_column", "margin_column") if getattr(rm, name) == column)


def _texts(where: str, prompt, side, tokenizer, column: str) -> tuple[str | None, str, bool]:
    """(prompt or None for a whole text, completion, whether the prompt is a chat template's rendering)."""
    if isinstance(side, list):  # chat turns, the prompt's among them (UltraFeedback's layout)
        return (*split_messages(where, side, tokenizer, column), True)
    if not isinstance(side, str) or not side.strip():
        raise PromptError(f"{where}: {column!r} is missing or empty")
    return prompt, side, False


def encode_pair(where: str, chosen, rejected, margin: float, tokenizer, cfg: TrainConfig) -> Pair:
    if chosen == rejected:
        raise PromptError(f"{where}: chosen and rejected are the same text; the pair says nothing")
    return Pair(where, _encode_side(where, *chosen, tokenizer, cfg), _encode_side(where, *rejected, tokenizer, cfg), margin)


def _encode_side(where: str, prompt: str | None, completion: str, templated: bool, tokenizer, cfg: TrainConfig) -> tuple[list[int], list[int]]:
    limit = cfg.rm.max_completion_tokens
    if prompt is None:  # a whole text: its first token stands as the prompt, the rest is scored
        ids = encode_completion(where, completion, tokenizer, limit + 1)
        return ids[:1], ids[1:]
    prompt_ids = encode_prompt(where, prompt, tokenizer, cfg.rm.max_prompt_tokens, templated, "rm.max_prompt_tokens")
    return prompt_ids, encode_completion(where, completion, tokenizer, limit)
