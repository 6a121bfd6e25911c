"""SFT demonstrations, tokenized and checked before any model loads; an error names the file line.

The layouts read (the first that fits a row):
- a conversation: `sft.messages_column` (role/content turns) or ShareGPT's `conversations`
  (from/value turns), rendered by the chat template;
- prompt and completion (`sft.prompt_column`, `sft.completion_column`), each text or a message
  list (TRL's prompt-completion layouts): a list, or text under task.chat_template=on, is rendered
  as a conversation, the completion its assistant turns;
- Alpaca's instruction (+ input) and output: text, the instruction then the input after a blank line.

What is trained (sft.loss_on): `last` the last assistant turn (a text completion), `assistant` every
assistant turn (of the completion, in a prompt-completion row: TRL's assistant_only_loss), `all`
every token after the first. A rendered turn is trained up to and including the first of the model's
EOS ids in it (the template's end of turn; rlhand/data/conversations.py), so SFT, the reward model
and the RL sampler all end a response at the same token. A text completion ends with the tokenizer's
EOS; one that already ends with the EOS's text gets the token instead of the text, not both (TRL's rule).
"""

from typing import NamedTuple

from transformers import PreTrainedTokenizerBase

from rlhand.config.schema import ChatTemplate, TrainConfig
from rlhand.config.stages import LossOn, Overlong
from rlhand.data.conversations import assistant_spans, messages, trained_span, with_system
from rlhand.data.files import DataError, read_rows
from rlhand.data.prompts import Prompt, prompt_token_ids
from rlhand.tasks import BUILTIN_DEMONSTRATIONS

SHAREGPT_COLUMN = "conversations"


class Example(NamedTuple):
    where: str
    prompt_ids: list[int]  # the context before the first trained token
    completion_ids: list[int]  # from the first trained token to the last (a turn's end of turn, or EOS)
    trained: list[int] | None = None  # per completion token, 1 trained, 0 context (a user turn between assistant turns); None: all


class Turns(NamedTuple):
    """A row as a conversation: its turns, and the index of the first turn the completion may take."""

    turns: list[dict]
    first_trained: int


def load_demonstrations(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, path: str | None, stop_ids: tuple[int, ...]) -> tuple[list[Example], int]:
    """(the examples, how many rows sft.truncation=drop left out)."""
    sft, task = cfg.sft, cfg.task
    if path is None:
        make = BUILTIN_DEMONSTRATIONS.get(task.name)
        if make is None:
            raise DataError(f"sft.path: no demonstrations given, and task {task.name} has no built-in ones")
        rows = [(f"task {task.name}: demonstration {i}", {sft.prompt_column: p, sft.completion_column: c}) for i, (p, c) in enumerate(make(sft.num_examples, task.prompt_chars, sft.demo_quality, cfg.seed))]
    else:
        rows = [(f"{path}: {where}", row) for where, row in read_rows(path, "demonstration")]
    examples = [example(where, row, cfg, tokenizer, stop_ids) for where, row in rows]
    kept = [e for e in examples if e is not None]
    return kept, len(examples) - len(kept)


def example(where: str, row: dict, cfg: TrainConfig, tokenizer, stop_ids: tuple[int, ...]) -> Example | None:
    sft = cfg.sft
    layout = conversation_of(where, row, cfg)
    if isinstance(layout, Turns):
        turns = with_system(layout.turns, cfg.task.system_prompt)
        shift = len(turns) - len(layout.turns)
        made = rendered_example(where, tokenizer, turns, layout.first_trained + shift, sft.loss_on, stop_ids)
    else:
        prompt, completion = layout
        made = text_example(where, prompt, completion, tokenizer, cfg)
    return fitted(made, sft.max_prompt_tokens, sft.max_completion_tokens, sft.truncation, "sft")


def conversation_of(where: str, row: dict, cfg: TrainConfig) -> "Turns | tuple[str, str]":
    """The row as a conversation to render, or as (prompt text, completion text)."""
    sft, template = cfg.sft, cfg.task.chat_template
    for column in (sft.messages_column, SHAREGPT_COLUMN):
        if column in row and sft.completion_column not in row:
            if template is ChatTemplate.off:
                raise DataError(f"{where}: a message list, but task.chat_template=off renders nothing")
            turns = messages(where, row[column], column)
            if turns[-1]["role"] != "assistant":
                raise DataError(f"{where}: the last turn of {column!r} is {turns[-1]['role']!r}; the completion must be the assistant's")
            return Turns(turns, 0)
    if sft.prompt_column not in row and {"instruction", "output"} <= set(row):  # Alpaca
        extra = row.get("input") or ""
        prompt = _text(where, row["instruction"], "instruction") + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
        return _text_or_turns(where, prompt, row["output"], template)
    for column in (sft.prompt_column, sft.completion_column):
        if column not in row:
            raise DataError(f"{where}: no column {column!r} (found {sorted(row)}); set sft.prompt_column / sft.completion_column, or give a {sft.messages_column!r} column")
    prompt, completion = row[sft.prompt_column], row[sft.completion_column]
    if isinstance(prompt, list) or isinstance(completion, list):
        if not isinstance(prompt, list) and not isinstance(prompt, str):
            raise DataError(f"{where}: {sft.prompt_column!r} is {type(prompt).__name__}, not text or a message list")
        if template is ChatTemplate.off:
            raise DataError(f"{where}: a message list, but task.chat_template=off renders nothing")
        head = messages(where, prompt, sft.prompt_column) if isinstance(prompt, list) else [{"role": "user", "content": _text(where, prompt, sft.prompt_column)}]
        tail = messages(where, completion, sft.completion_column) if isinstance(completion, list) else [{"role": "assistant", "content": _text(where, completion, sft.completion_column)}]
        if not any(turn["role"] == "assistant" for turn in tail):
            raise DataError(f"{where}: {sft.completion_column!r} has no assistant turn")
        return Turns(head + tail, len(head))
    return _text_or_turns(where, _text(where, prompt, "the prompt"), _text(where, completion, "the completion"), template)


def _text_or_turns(where: str, prompt, completion, template: ChatTemplate) -> "Turns | tuple[str, str]":
    prompt, completion = _text(where, prompt, "the prompt"), _text(where, completion, "the completion")
    if template is ChatTemplate.on:
        return Turns([{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], 1)
    return prompt, completion


def _text(where: str, value, what: str) -> str:
    name = what if what.startswith("the ") else repr(what)
    if isinstance(value, str) and value.strip():
        return value
    if value is None or isinstance(value, str):
        raise DataError(f"{where}: {name} is missing or empty")
    raise DataError(f"{where}: {name} is {type(value).__name__} ({str(value)[:40]}), not text")


def rendered_example(where: str, tokenizer, turns: list[dict], first_trained: int, loss_on: LossOn, stop_ids: tuple[int, ...]) -> Example:
    """A conversation's ids with the trained assistant turns (from `first_trained` on) marked."""
    candidates = [i for i, turn in enumerate(turns) if turn["role"] == "assistant" and i >= first_trained]
    if not candidates:
        raise DataError(f"{where}: no assistant turn to train on")
    wanted = candidates[-1:] if loss_on is LossOn.last else candidates
    ids, spans = assistant_spans(tokenizer, turns, where, wanted)
    cuts = [trained_span(ids, span, stop_ids, where) for span in spans]
    end = cuts[-1][1]
    if loss_on is LossOn.all:
        return Example(where, ids[:1], ids[1:end])
    start = cuts[0][0]
    trained = [0] * (end - start)
    for a, b in cuts:
        trained[a - start : b - start] = [1] * (b - a)
    return Example(where, ids[:start], ids[start:end], None if all(trained) else trained)


def text_example(where: str, prompt: str, completion: str, tokenizer, cfg: TrainConfig) -> Example:
    """A text prompt as the RL stage tokenizes one, the completion's tokens and EOS."""
    prompt_ids = prompt_token_ids(tokenizer, Prompt(where, prompt), cfg.task.chat_template, cfg.task.system_prompt)
    completion_ids = encode_completion(where, completion, tokenizer, prerendered=cfg.task.chat_template is ChatTemplate.off)
    if cfg.sft.loss_on is LossOn.all:
        return Example(where, prompt_ids[:1], prompt_ids[1:] + completion_ids)
    return Example(where, prompt_ids, completion_ids)


def encode_completion(where: str, text: str, tokenizer, prerendered: bool = False) -> list[int]:
    """A text completion's tokens and EOS (special-token strings in it are text, unless the data is
    `prerendered`: task.chat_template=off); a completion that ends with the EOS's own text ends with
    the EOS token instead (TRL's rule: never both)."""
    eos_text = tokenizer.eos_token
    if eos_text and text.endswith(eos_text) and text[: -len(eos_text)].strip():
        text = text[: -len(eos_text)]
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=not prerendered)["input_ids"]
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:  # before the EOS: some tokenizers' unknown token is their EOS
        raise DataError(f"{where}: the tokenizer cannot represent part of the completion {text[:40]!r}")
    return ids + [tokenizer.eos_token_id]


def fitted(item: Example, max_prompt: int, max_completion: int, mode: Overlong, section: str) -> Example | None:
    """An example within the stage's limits: as it is, cut (truncate: the prompt's start and the
    completion's end go), left out (drop: None), or an error naming its line."""
    over_prompt, over_completion = len(item.prompt_ids) > max_prompt, len(item.completion_ids) > max_completion
    if not (over_prompt or over_completion):
        return item
    if mode is Overlong.drop:
        return None
    if mode is Overlong.error:
        if over_prompt:
            raise DataError(f"{item.where}: prompt has {len(item.prompt_ids)} tokens > {section}.max_prompt_tokens={max_prompt} ({section}.truncation=error)")
        raise DataError(f"{item.where}: the completion has {len(item.completion_ids)} tokens with its end > {section}.max_completion_tokens={max_completion} ({section}.truncation=error)")
    trained = None if item.trained is None else item.trained[:max_completion]
    return Example(item.where, item.prompt_ids[-max_prompt:], item.completion_ids[:max_completion], trained)



