"""SFT demonstrations: prompt + completion rows (or chat `messages`), tokenized and checked before
any model loads. Every example keeps where it came from, so an error names the file line."""

from pathlib import Path
from typing import NamedTuple

from transformers import PreTrainedTokenizerBase

from rlhand.config.schema import TrainConfig, Truncation
from rlhand.data.prompts import Prompt, PromptError, encode_prompts, read_rows
from rlhand.tasks import BUILTIN_DEMONSTRATIONS


class Example(NamedTuple):
    where: str
    prompt_ids: list[int]
    completion_ids: list[int]  # ends with EOS: a fine-tuned model learns to stop


def load_demonstrations(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, path: str | None) -> list[Example]:
    sft, task = cfg.sft, cfg.task
    if path is None:
        make = BUILTIN_DEMONSTRATIONS.get(task.name)
        if make is None:
            raise PromptError(f"sft.path: no demonstrations given, and task {task.name} has no built-in ones")
        texts = [(f"task {task.name}: demonstration {i}", p, c, False) for i, (p, c) in enumerate(make(sft.num_examples, task.prompt_chars, sft.demo_quality, cfg.seed))]
    else:
        rows = read_rows(Path(path), "demonstration")
        texts = [(f"{path}: {where}", *prompt_and_completion(f"{path}: {where}", row, sft, tokenizer)) for where, row in rows]
    return [
        Example(where, encode_prompt(where, prompt, tokenizer, sft.max_prompt_tokens, templated), checked_completion(where, completion, tokenizer, sft.max_completion_tokens))
        for where, prompt, completion, templated in texts
    ]


def prompt_and_completion(where: str, row: dict, sft, tokenizer) -> tuple[str, str, bool]:
    """(prompt text, completion text, whether the prompt is a chat template's rendering)."""
    if sft.messages_column in row and sft.prompt_column not in row:
        return (*split_messages(where, row[sft.messages_column], tokenizer, sft.messages_column), True)
    for column in (sft.prompt_column, sft.completion_column):
        if column not in row:
            raise PromptError(f"{where}: no column {column!r} (found {sorted(row)}); set sft.prompt_column / sft.completion_column, or give a {sft.messages_column!r} column")
    return row[sft.prompt_column], row[sft.completion_column], False


def split_messages(where: str, messages, tokenizer: PreTrainedTokenizerBase, column: str) -> tuple[str, str]:
    """Chat turns -> (the chat template's text up to the assistant's turn, the assistant's reply)."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise PromptError(f"{where}: {column!r} must be a list of {{role, content}} turns")
    if messages[-1]["role"] != "assistant":
        raise PromptError(f"{where}: the last turn of {column!r} is {messages[-1]['role']!r}; the completion must be the assistant's")
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError(f"{where}: chat messages need a tokenizer with a chat template (this one has none; use prompt/completion columns)")
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    return prompt, messages[-1]["content"]


def encode_prompt(where: str, prompt, tokenizer, limit: int, templated: bool, field: str = "sft.max_prompt_tokens") -> list[int]:
    """A user's prompt as plain text (special-token strings in it are text, as for RL prompts); a
    chat template's rendering with its special tokens as the template wrote them, nothing added.
    Longer than `limit`: an error naming the line."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError(f"{where}: the prompt is missing or empty")
    if templated:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) > limit:
            raise PromptError(f"{where}: prompt has {len(ids)} tokens > {field}={limit}")
        return ids
    return encode_prompts(tokenizer, [Prompt(where, prompt)], limit, Truncation.error, field)[0]


def checked_completion(where: str, completion, tokenizer, limit: int) -> list[int]:
    if not isinstance(completion, str) or not completion.strip():
        raise PromptError(f"{where}: the completion is missing or empty")
    return encode_completion(where, completion, tokenizer, limit)


def encode_completion(where: str, text: str, tokenizer, limit: int) -> list[int]:
    """The completion's tokens and EOS; an unknown character or one token too many is an error."""
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:  # before the EOS: some tokenizers' unknown token is their EOS
        raise PromptError(f"{where}: the tokenizer cannot represent part of the completion {text[:40]!r}")
    ids.append(tokenizer.eos_token_id)
    if len(ids) > limit:
        raise PromptError(f"{where}: the completion has {len(ids)} tokens with EOS > max_completion_tokens={limit}")
    return ids
