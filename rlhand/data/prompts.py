"""Prompt sources: the built-in task's generator or a user's file, checked before models load.

Every prompt keeps where it came from ("p.jsonl: line 7", "p.parquet: row 3", "task letters:
prompt 12") through the validation hold-out and tokenization, so any error names the file line.
"""

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
from transformers import PreTrainedTokenizerBase

from rlhand.config.schema import PromptSource, TaskConfig, Truncation
from rlhand.errors import UserError
from rlhand.tasks import BUILTIN_PROMPTS


class PromptError(UserError):
    """A missing, empty or malformed prompt source; the message names the file (and line)."""


class Prompt(NamedTuple):
    where: str  # "<file>: line N" (or row N), or "task <name>: prompt i"
    text: str


def load_prompts(task: TaskConfig, seed: int) -> list[Prompt]:
    if task.source is PromptSource.builtin:
        if task.name not in BUILTIN_PROMPTS:
            raise PromptError(f"task.name: no built-in task {task.name!r} (have {sorted(BUILTIN_PROMPTS)})")
        texts = BUILTIN_PROMPTS[task.name](task.num_prompts, task.prompt_chars, seed)
        return [Prompt(f"task {task.name}: prompt {i}", text) for i, text in enumerate(texts)]
    return read_prompt_file(Path(task.path), task.prompt_column)


def read_prompt_file(path: Path, column: str) -> list[Prompt]:
    return _column(path, read_rows(path, "prompt"), column)


def read_rows(path: Path, kind: str) -> list[tuple[str, dict]]:
    """The rows of a JSONL, CSV or Parquet file or a saved `datasets` folder, each labelled by
    where it is ("line 7", "row 3") for errors; `kind` names the file in them ("prompt", ...)."""
    if not path.exists():
        raise PromptError(f"{path}: {kind} file not found")
    suffix = path.suffix.lower()
    if path.is_dir():
        rows = _read_dataset_folder(path)
    elif suffix in (".jsonl", ".json"):
        rows = _read_jsonl(path)
    elif suffix in (".csv", ".parquet"):
        if suffix == ".csv":
            _check_utf8(path)
        rows = _read_with_datasets(path, "csv" if suffix == ".csv" else "parquet")
    else:
        raise PromptError(f"{path}: unknown {kind} file type {suffix!r} (use .jsonl, .csv, .parquet or a saved datasets folder)")
    if not rows:
        raise PromptError(f"{path}: no {kind}s in file" if kind == "prompt" else f"{path}: no rows in file")
    return rows


def _decode_line(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PromptError(f"{path}: line {number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})") from None


def _check_utf8(path: Path) -> None:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            _decode_line(path, number, raw)


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    """Rows labelled by their line number, for errors."""
    rows = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _decode_line(path, number, raw)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PromptError(f"{path}: line {number}: malformed JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise PromptError(f"{path}: line {number}: expected a JSON object per line")
            rows.append((f"line {number}", row))
    return rows


def _read_with_datasets(path: Path, kind: str) -> list[tuple[str, dict]]:
    import datasets

    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:  # datasets raises many types; all mean the same thing here
        raise PromptError(
            f"{path}: cannot read as {kind}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    # CSV line = data row + 2 (1-based, after the header) unless a field spans lines.
    first = 2 if kind == "csv" else 0
    label = "line" if kind == "csv" else "row"
    return [(f"{label} {first + i}", row) for i, row in enumerate(table.to_list())]


def _read_dataset_folder(path: Path) -> list[tuple[str, dict]]:
    import datasets

    try:
        table = datasets.load_from_disk(str(path))
    except Exception as err:
        raise PromptError(
            f"{path}: not a saved datasets folder: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    if isinstance(table, datasets.DatasetDict):
        if "train" not in table:
            raise PromptError(f"{path}: saved DatasetDict has no 'train' split (has {sorted(table)})")
        table = table["train"]
    return [(f"row {i}", row) for i, row in enumerate(table.to_list())]


def _column(path: Path, rows: list[tuple[str, dict]], column: str) -> list[Prompt]:
    if column not in rows[0][1]:
        raise PromptError(f"{path}: no column {column!r} (found {sorted(rows[0][1])}); set task.prompt_column")
    prompts = []
    for where, row in rows:
        text = row.get(column)
        if not isinstance(text, str) or not text.strip():
            raise PromptError(f"{path}: {where}: {column!r} is missing or empty")
        prompts.append(Prompt(f"{path}: {where}", text))
    return prompts


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt], limit: int, mode: Truncation, field: str = "task.max_prompt_tokens") -> list[list[int]]:
    """Token ids of each prompt, cut to `limit` as configured. Text that looks like a special token
    ("<eos>", "<|im_end|>") is tokenized as the plain text it is: data never injects control
    tokens. A prompt with characters the tokenizer can only map to its unknown token is an error
    naming its line, never a silently shortened prompt."""
    out = []
    for prompt in prompts:
        encoded = tokenizer(prompt.text, split_special_tokens=True, return_offsets_mapping=tokenizer.is_fast)
        ids = encoded["input_ids"]
        unk = tokenizer.unk_token_id
        if unk is not None and unk in ids:
            raise PromptError(f"{prompt.where}: {_unknown_text(prompt.text, ids, encoded.get('offset_mapping'), unk)}")
        out.append(truncate_prompt(ids, limit, mode, prompt.where, field))
    return out


def _unknown_text(text: str, ids: list[int], offsets, unk: int) -> str:
    spans = [text[start:end] for token, (start, end) in zip(ids, offsets or []) if token == unk]
    chars = sorted({ch for span in spans for ch in span})
    if not chars:
        return "the tokenizer maps part of this prompt to its unknown token"
    named = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in chars[:5])
    return f"the tokenizer cannot represent {named}; remove them or use a tokenizer that has them (model=hf)"


def truncate_prompt(ids: list[int], limit: int, mode: Truncation, where: str, field: str = "task.max_prompt_tokens") -> list[int]:
    """Cut a tokenized prompt to `limit` tokens as configured; `where` names it in errors."""
    if len(ids) <= limit:
        return ids
    if mode is Truncation.error:
        raise PromptError(f"{where}: prompt has {len(ids)} tokens > {field}={limit}" + (" (task.truncation=error)" if field.startswith("task.") else ""))
    return ids[-limit:] if mode is Truncation.left else ids[:limit]


def split_holdout(prompts: list[Prompt], count: int, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """(train, held_out): `count` prompts picked by a seeded permutation are held out for validation."""
    if count >= len(prompts):
        raise PromptError(f"eval.num_prompts: holding out {count} of {len(prompts)} prompts leaves none to train on")
    order = np.random.default_rng([seed, 7919]).permutation(len(prompts))
    held = set(order[:count].tolist())
    return [p for i, p in enumerate(prompts) if i not in held], [prompts[i] for i in sorted(held)]
