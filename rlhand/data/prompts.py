"""RL prompts: the built-in task's generator or a user's file, checked before models load.

A prompt is text or a conversation (a message list, TRL's and verl's layout), with every other
column of its row and, when task.label_column names one, its ground truth: what reward functions
receive beside the response. Every prompt keeps where it came from ("p.jsonl: line 7", "p.parquet:
row 3", "task letters: prompt 12") through the validation hold-out and tokenization, so any error
names the row.

How prompts become ids (task.chat_template): a conversation is rendered by the tokenizer's chat
template with the generation prompt (auto, on). Text is tokenized as text (auto: `<|im_end|>` in it
is characters, never a control token; the tokenizer's own BOS added), rendered as one user turn (on),
or taken as already rendered (off: a prompt the user formatted, whose control tokens are control
tokens, nothing added). task.system_prompt comes first in every rendered conversation without a
system turn of its own.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from rlhand.config.schema import ChatTemplate, PromptSource, TaskConfig, Truncation
from rlhand.data.conversations import messages, prompt_ids, with_system
from rlhand.data.files import DataError, read_rows
from rlhand.tasks import BUILTIN_PROMPTS

PromptError = DataError  # the name the prompt modules have always raised

# What a reward function is called with besides the columns; a column may not take one of these names.
REWARD_ARGUMENTS = ("prompts", "responses", "prompt_ids", "response_ids", "messages", "labels")


@dataclass(frozen=True)
class Prompt:
    where: str  # "<file>: line N" (or row N, item N), or "task <name>: prompt i"
    text: str | None = None  # a text prompt, or None for a conversation
    messages: list[dict] | None = None  # a conversation's turns (role/content), as read
    columns: dict[str, Any] = field(default_factory=dict)  # every other column of the row, as read
    label: Any = None  # task.label_column's value (a reward function's `labels`); None without one
    rendered: bool = False  # its ids hold control tokens (a conversation, or text under chat_template on/off): text scorers read them kept

    @property
    def is_conversation(self) -> bool:
        return self.messages is not None


@dataclass(frozen=True)
class PromptFormat:
    """How a prompt file is read and rendered (task.* for the RL stage; rlhand-eval's flags)."""

    column: str = "prompt"
    label_column: str | None = None
    chat_template: ChatTemplate = ChatTemplate.auto
    system_prompt: str | None = None

    @classmethod
    def of(cls, task: TaskConfig, column: str | None = None) -> "PromptFormat":
        return cls(column or task.prompt_column, task.label_column, task.chat_template, task.system_prompt)


def load_prompts(task: TaskConfig, seed: int) -> list[Prompt]:
    if task.source is PromptSource.builtin:
        if task.name not in BUILTIN_PROMPTS:
            raise PromptError(f"task.name: no built-in task {task.name!r} (have {sorted(BUILTIN_PROMPTS)})")
        made = BUILTIN_PROMPTS[task.name](task.num_prompts, task.prompt_chars, seed)
        rendered = task.chat_template is not ChatTemplate.auto
        return [builtin_prompt(f"task {task.name}: prompt {i}", item, rendered) for i, item in enumerate(made)]
    return read_prompt_file(task.path, PromptFormat.of(task))


def builtin_prompt(where: str, item: "str | tuple[str, str]", rendered: bool = False) -> Prompt:
    """A built-in generator's prompt: text, or (text, label) for a task with ground truth."""
    text, label = (item, None) if isinstance(item, str) else item
    return Prompt(where, text, label=label, rendered=rendered)


def read_prompt_file(path: str | Path, fmt: "PromptFormat | str") -> list[Prompt]:
    """The prompts of a file; `fmt` may be just the prompt column's name."""
    fmt = PromptFormat(column=fmt) if isinstance(fmt, str) else fmt
    rows = read_rows(path, "prompt")
    if fmt.column not in rows[0][1]:
        raise PromptError(f"{path}: no column {fmt.column!r} (found {sorted(rows[0][1])}); set task.prompt_column")
    prompts = [_prompt(f"{path}: {where}", row, fmt) for where, row in rows]
    kinds = {p.is_conversation for p in prompts}
    if len(kinds) > 1:
        first = prompts[0].is_conversation
        odd = next(p for p in prompts if p.is_conversation != first)
        said = ("a message list", "text") if odd.is_conversation else ("text", "a message list")
        raise PromptError(f"{odd.where}: {fmt.column!r} is {said[0]} where the rows before it have {said[1]}; one file holds one kind of prompt")
    return prompts


def _prompt(where: str, row: dict, fmt: PromptFormat) -> Prompt:
    value = row.get(fmt.column)
    text = turns = None
    if isinstance(value, list):
        turns = messages(where, value, fmt.column)
    elif isinstance(value, str) and value.strip():
        text = value
    elif value is None or isinstance(value, str):
        raise PromptError(f"{where}: {fmt.column!r} is missing or empty")
    else:
        raise PromptError(f"{where}: {fmt.column!r} is {type(value).__name__} ({str(value)[:40]}), not text or a message list")
    columns = {k: v for k, v in row.items() if k not in (fmt.column, fmt.label_column)}
    taken = sorted(set(columns) & set(REWARD_ARGUMENTS) - ({"messages"} if turns is None else set()))  # messages is passed for conversations only
    if taken:
        raise PromptError(f"{where}: column {taken[0]!r} has the name of a reward-function argument ({', '.join(REWARD_ARGUMENTS)}); rename it")
    label = resolve_column(where, row, fmt.label_column, "task.label_column") if fmt.label_column else None
    return Prompt(where, text, turns, columns, label, rendered=turns is not None or fmt.chat_template is not ChatTemplate.auto)


def resolve_column(where: str, row: dict, path: str, setting: str) -> Any:
    """A column's value, or a nested one by a dotted path (verl's `reward_model.ground_truth`): a
    column of that literal name first. Missing, or null: an error naming the row."""
    if path in row:
        value = row[path]
    else:
        value, walked = row, []
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                have = sorted(value) if isinstance(value, dict) else type(value).__name__
                raise PromptError(f"{where}: {setting} {path!r}: no {'.'.join(walked + [part])!r} in this row (has {have})")
            value, walked = value[part], walked + [part]
    if value is None:
        raise PromptError(f"{where}: {setting} {path!r} is null")
    return value


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    limit: int,
    mode: Truncation,
    field: str = "task.max_prompt_tokens",
    chat_template: ChatTemplate = ChatTemplate.auto,
    system_prompt: str | None = None,
) -> list[list[int] | None]:
    """Token ids of each prompt (None: longer than `limit` under truncation=drop; `kept` filters
    them out), cut as configured. A text prompt's characters the tokenizer can only map to its
    unknown token are an error naming its row, never a silently shortened prompt."""
    out = []
    for prompt in prompts:
        ids = prompt_token_ids(tokenizer, prompt, chat_template, system_prompt)
        out.append(truncate_prompt(ids, limit, mode, prompt.where, field))
    return out


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, chat_template: ChatTemplate, system_prompt: str | None) -> list[int]:
    """One prompt's ids by the rendering rule (module docstring)."""
    if prompt.is_conversation:
        if chat_template is ChatTemplate.off:
            raise PromptError(f"{prompt.where}: a message list, but task.chat_template=off renders nothing; give text or set task.chat_template=auto")
        return prompt_ids(tokenizer, with_system(prompt.messages, system_prompt), prompt.where)
    if chat_template is ChatTemplate.on:
        return prompt_ids(tokenizer, with_system([{"role": "user", "content": prompt.text}], system_prompt), prompt.where)
    if system_prompt is not None:
        raise PromptError(f"{prompt.where}: task.system_prompt is given, but text prompts are tokenized as they are; set task.chat_template=on to render them with it")
    return text_ids(tokenizer, prompt.where, prompt.text, prerendered=chat_template is ChatTemplate.off)


def text_ids(tokenizer: PreTrainedTokenizerBase, where: str, text: str, prerendered: bool = False) -> list[int]:
    """Text's ids: as text (control-token strings are characters; the tokenizer's own special tokens,
    a BOS, added), or `prerendered` exactly as written (its control tokens are control tokens,
    nothing added). Characters only the unknown token can stand for are an error naming `where`."""
    encoded = tokenizer(text, split_special_tokens=not prerendered, add_special_tokens=not prerendered, return_offsets_mapping=tokenizer.is_fast)
    ids = encoded["input_ids"]
    unk = tokenizer.unk_token_id
    if unk is not None and unk in ids:
        raise PromptError(f"{where}: {_unknown_text(text, ids, encoded.get('offset_mapping'), unk)}")
    return ids


def kept(prompts: list[Prompt], ids: list[list[int] | None]) -> tuple[list[Prompt], list[list[int]], int]:
    """(the prompts not dropped, their ids, how many were dropped)."""
    pairs = [(p, i) for p, i in zip(prompts, ids) if i is not None]
    return [p for p, _ in pairs], [i for _, i in pairs], len(prompts) - len(pairs)


def _unknown_text(text: str, ids: list[int], offsets, unk: int) -> str:
    spans = [text[start:end] for token, (start, end) in zip(ids, offsets or []) if token == unk]
    chars = sorted({ch for span in spans for ch in span})
    if not chars:
        return "the tokenizer maps part of this prompt to its unknown token"
    named = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in chars[:5])
    return f"the tokenizer cannot represent {named}; remove them or use a tokenizer that has them (model=hf)"


def truncate_prompt(ids: list[int], limit: int, mode: Truncation, where: str, field: str = "task.max_prompt_tokens") -> list[int] | None:
    """Cut a tokenized prompt to `limit` tokens as configured (None: dropped); `where` names it in errors."""
    if len(ids) <= limit:
        return ids
    if mode is Truncation.error:
        raise PromptError(f"{where}: prompt has {len(ids)} tokens > {field}={limit}" + (" (task.truncation=error)" if field.startswith("task.") else ""))
    if mode is Truncation.drop:
        return None
    return ids[-limit:] if mode is Truncation.left else ids[:limit]


def split_holdout(prompts: list, count: int, seed: int) -> tuple[list, list]:
    """(train, held_out): `count` prompts picked by a seeded permutation are held out for validation."""
    if count >= len(prompts):
        raise PromptError(f"eval.num_prompts: holding out {count} of {len(prompts)} prompts leaves none to train on")
    import numpy as np

    order = np.random.default_rng([seed, 7919]).permutation(len(prompts))
    held = set(order[:count].tolist())
    return [p for i, p in enumerate(prompts) if i not in held], [prompts[i] for i in sorted(held)]

