"""Prompt sources: the built-in task's generator or a user's file, checked before models load."""

import json
from pathlib import Path

import numpy as np

from rlhand.config.schema import PromptSource, TaskConfig, Truncation
from rlhand.tasks import BUILTIN_PROMPTS


class PromptError(ValueError):
    """A missing, empty or malformed prompt source; the message names the file (and line)."""


def load_prompt_texts(task: TaskConfig, seed: int) -> list[str]:
    if task.source is PromptSource.builtin:
        if task.name not in BUILTIN_PROMPTS:
            raise PromptError(f"task.name: no built-in task {task.name!r} (have {sorted(BUILTIN_PROMPTS)})")
        return BUILTIN_PROMPTS[task.name](task.num_prompts, task.prompt_chars, seed)
    return read_prompt_file(Path(task.path), task.prompt_column)


def read_prompt_file(path: Path, column: str) -> list[str]:
    if not path.exists():
        raise PromptError(f"{path}: prompt file not found")
    suffix = path.suffix.lower()
    if path.is_dir():
        rows = _read_dataset_folder(path)
    elif suffix in (".jsonl", ".json"):
        rows = _read_jsonl(path)
    elif suffix in (".csv", ".parquet"):
        rows = _read_with_datasets(path, "csv" if suffix == ".csv" else "parquet")
    else:
        raise PromptError(f"{path}: unknown prompt file type {suffix!r} (use .jsonl, .csv, .parquet or a saved datasets folder)")
    if not rows:
        raise PromptError(f"{path}: no prompts in file")
    return _column(path, rows, column)


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    """Rows labelled by their line number, for errors."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
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


def _column(path: Path, rows: list[tuple[str, dict]], column: str) -> list[str]:
    if column not in rows[0][1]:
        raise PromptError(f"{path}: no column {column!r} (found {sorted(rows[0][1])}); set task.prompt_column")
    texts = []
    for where, row in rows:
        text = row.get(column)
        if not isinstance(text, str) or not text.strip():
            raise PromptError(f"{path}: {where}: {column!r} is missing or empty")
        texts.append(text)
    return texts


def truncate_prompt(ids: list[int], limit: int, mode: Truncation, where: str) -> list[int]:
    """Cut a tokenized prompt to `limit` tokens as configured; `where` names it in errors."""
    if len(ids) <= limit:
        return ids
    if mode is Truncation.error:
        raise PromptError(f"{where}: prompt has {len(ids)} tokens > task.max_prompt_tokens={limit} (task.truncation=error)")
    return ids[-limit:] if mode is Truncation.left else ids[:limit]


def split_holdout(texts: list[str], count: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, held_out): `count` prompts picked by a seeded permutation are held out for validation."""
    if count >= len(texts):
        raise PromptError(f"eval.num_prompts: holding out {count} of {len(texts)} prompts leaves none to train on")
    order = np.random.default_rng([seed, 7919]).permutation(len(texts))
    held = set(order[:count].tolist())
    return [t for i, t in enumerate(texts) if i not in held], [texts[i] for i in sorted(held)]
