"""Reward-model preference pairs, tokenized and checked before any model loads; an error names the
file line. Each side is (prompt ids, completion ids), scored at the completion's last token: the
EOS a text completion gets, or the end of turn that closes a rendered assistant turn (the token a
policy's sampled response ends with, so reward=model reads the same token).

The layouts read:
- explicit prompt (TRL, OpenRLHF): `rm.prompt_column` and chosen/rejected, each text or message
  lists (a prompt conversation; chosen/rejected the assistant's turns, or text for one turn);
- implicit prompt (TRL, UltraFeedback): chosen/rejected whole conversations whose turns before the
  last assistant turn are the prompt, the same on both sides (a prompt column beside them is ignored);
- whole texts (`rm.prompt_column=null`): tokenized with the tokenizer's special tokens (its BOS, as
  a text is scored in the RL stage) and EOS.
Text under task.chat_template=on is rendered too: the prompt as a user turn, a side as the reply.
"""

import math
from typing import NamedTuple

from transformers import PreTrainedTokenizerBase

from rlhand.config.schema import ChatTemplate, TrainConfig
from rlhand.config.stages import Overlong
from rlhand.data.conversations import assistant_spans, messages, trained_span, with_system
from rlhand.data.demonstrations import Example, encode_completion, fitted
from rlhand.data.files import DataError, read_rows
from rlhand.data.prompts import Prompt, prompt_token_ids, text_ids
from rlhand.tasks import BUILTIN_PREFERENCES


class Pair(NamedTuple):
    where: str
    chosen: tuple[list[int], list[int]]  # (prompt ids, completion ids): scored at the completion's last token
    rejected: tuple[list[int], list[int]]
    margin: float


def load_preferences(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, path: str | None, stop_ids: tuple[int, ...]) -> tuple[list[Pair], int]:
    """(the pairs, how many rm.truncation=drop left out)."""
    rm, task = cfg.rm, cfg.task
    if path is None:
        make = BUILTIN_PREFERENCES.get(task.name)
        if make is None:
            raise DataError(f"rm.path: no preference pairs given, and task {task.name} has no built-in ones")
        made = make(rm.num_pairs, task.prompt_chars, rm.label_noise, cfg.seed)
        rows = [(f"task {task.name}: pair {i}", {"prompt": p, rm.chosen_column: c, rm.rejected_column: r}) for i, (p, c, r) in enumerate(made)]
        layout = (rm.chosen_column, rm.rejected_column, "prompt")
    else:
        rows = [(f"{path}: {where}", row) for where, row in read_rows(path, "preference")]
        layout = (rm.chosen_column, rm.rejected_column, rm.prompt_column)
    pairs = [pair(where, row, layout, cfg, tokenizer, stop_ids, blank_is_empty=path is not None) for where, row in rows]
    kept = [p for p in pairs if p is not None]
    return kept, len(pairs) - len(kept)


def pair(where: str, row: dict, layout: tuple, cfg: TrainConfig, tokenizer, stop_ids: tuple[int, ...], blank_is_empty: bool = True) -> Pair | None:
    """One row's pair (None: over the limits under rm.truncation=drop). `blank_is_empty`: a side of
    whitespace alone is an error (a user's file; the built-in pairs have one-space answers)."""
    rm = cfg.rm
    chosen_column, rejected_column, prompt_column = layout
    conversational = isinstance(row.get(chosen_column), list) or isinstance(row.get(prompt_column), list)
    needed = [chosen_column, rejected_column] + [c for c in (None if conversational else prompt_column, rm.margin_column) if c]
    for column in needed:
        if column not in row:
            raise DataError(f"{where}: no column {column!r} (found {sorted(row)}); set rm.{_setting(rm, column)}")
    margin = _margin(where, row[rm.margin_column]) if rm.margin_column else 0.0
    prompt = row.get(prompt_column) if prompt_column else None
    chosen, rejected = row[chosen_column], row[rejected_column]
    if chosen == rejected:
        raise DataError(f"{where}: chosen and rejected are the same text; the pair says nothing")
    if conversational or (cfg.task.chat_template is ChatTemplate.on and prompt is not None):
        sides = conversation_sides(where, prompt, chosen, rejected, layout, cfg, tokenizer, stop_ids)
    else:
        sides = [text_side(where, prompt, side, column, tokenizer, cfg, blank_is_empty) for side, column in ((chosen, chosen_column), (rejected, rejected_column))]
    fitted_sides = [fitted(Example(where, p, c), rm.max_prompt_tokens, rm.max_completion_tokens, rm.truncation, "rm") for p, c in sides]
    if any(side is None for side in fitted_sides):
        return None
    (cp, cc), (rp, rc) = ((s.prompt_ids, s.completion_ids) for s in fitted_sides)
    if (cp, cc) == (rp, rc):
        if rm.truncation is Overlong.error:
            raise DataError(f"{where}: chosen and rejected are the same tokens; the pair says nothing")
        return None  # cut to the same tokens (rm.truncation=truncate): left out and counted
    return Pair(where, (cp, cc), (rp, rc), margin)


def text_side(where: str, prompt, completion, column: str, tokenizer, cfg: TrainConfig, blank_is_empty: bool = True) -> tuple[list[int], list[int]]:
    if not isinstance(completion, str) or not (completion.strip() if blank_is_empty else completion):
        raise DataError(f"{where}: {column!r} is " + ("missing or empty" if completion is None or isinstance(completion, str) else f"{type(completion).__name__}, not text"))
    prerendered = cfg.task.chat_template is ChatTemplate.off
    if prompt is None:  # a whole text, tokenized as an RL text prompt is (its BOS), then EOS; the first token stands as the prompt
        ids = text_ids(tokenizer, f"{where}: {column!r}", completion, prerendered) + [tokenizer.eos_token_id]
        return ids[:1], ids[1:]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: the prompt is " + ("missing or empty" if prompt is None or isinstance(prompt, str) else f"{type(prompt).__name__}, not text"))
    prompt_ids = prompt_token_ids(tokenizer, Prompt(where, prompt), cfg.task.chat_template, cfg.task.system_prompt)
    return prompt_ids, encode_completion(where, completion, tokenizer, prerendered)


def conversation_sides(where: str, prompt, chosen, rejected, layout: tuple, cfg: TrainConfig, tokenizer, stop_ids) -> list[tuple[list[int], list[int]]]:
    """Both sides as rendered conversations, each scored at the end of its last assistant turn."""
    chosen_column, rejected_column, prompt_column = layout
    if cfg.task.chat_template is ChatTemplate.off:
        raise DataError(f"{where}: message lists, but task.chat_template=off renders nothing")
    sides = []
    for side, column in ((chosen, chosen_column), (rejected, rejected_column)):
        turns = _turns(where, side, column, "assistant", f"{column!r} is missing or empty")
        if turns[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last turn of {column!r} is {turns[-1]['role']!r}; it must be the assistant's")
        sides.append(turns)
    implicit = [any(t["role"] != "assistant" for t in turns) for turns in sides]
    if implicit[0] != implicit[1]:
        raise DataError(f"{where}: one of chosen and rejected holds its prompt's turns and the other does not")
    if implicit[0]:  # the prompt is inside each side (a prompt column beside them is not read)
        heads = [turns[: _last_reply_start(turns)] for turns in sides]
        if heads[0] != heads[1]:
            raise DataError(f"{where}: chosen and rejected have different prompts (their turns before the last assistant reply differ)")
    else:
        head = _turns(where, prompt, prompt_column, "user", f"the chosen and rejected turns need a prompt ({prompt_column!r} is missing or empty)")
        sides = [head + turns for turns in sides]
    out = []
    for turns in sides:
        turns = with_system(turns, cfg.task.system_prompt)
        ids, (span,) = assistant_spans(tokenizer, turns, where, [len(turns) - 1])
        start, end = trained_span(ids, span, stop_ids, where)
        out.append((ids[:start], ids[start:end]))
    return out


def _turns(where: str, value, column, role: str, missing: str) -> list[dict]:
    """A message list as its turns, or text as one turn of `role`; `missing` says what is wrong otherwise."""
    if isinstance(value, list):
        return messages(where, value, column)
    if isinstance(value, str) and value.strip():
        return [{"role": role, "content": value}]
    raise DataError(f"{where}: {missing}")


def _last_reply_start(turns: list[dict]) -> int:
    """Where the final run of assistant turns starts: what comes before it is the prompt."""
    i = len(turns)
    while i > 0 and turns[i - 1]["role"] == "assistant":
        i -= 1
    return i


def _margin(where: str, value) -> float:
    try:
        margin = float(value)
    except (TypeError, ValueError):
        margin = math.nan
    if not math.isfinite(margin):
        raise DataError(f"{where}: the margin {value!r} is not a finite number")
    return margin


def _setting(rm, column: str) -> str:
    return next(name for name in ("chosen_column", "rejected_column", "prompt_column", "margin_column") if getattr(rm, name) == column)
