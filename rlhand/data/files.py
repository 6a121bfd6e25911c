"""Data files as rows: JSONL, a JSON array (Alpaca's files), CSV, Parquet (verl's layout), a folder
saved by `datasets`, or a `datasets` name from the local cache (`hf:NAME[:CONFIG][@SPLIT]`). Each row
keeps where it is ("line 7", "row 3", "item 2") so that an error names it. Values are as the file
holds them: nested columns stay dicts and lists, and a CSV cell is the text it holds (a column of
digits is not turned into numbers, "042" stays "042")."""

import csv
import json
import os
from pathlib import Path

from rlhand.errors import UserError

HUB_PREFIX = "hf:"


class DataError(UserError):
    """A missing, empty or malformed data source; the message names the file (and line)."""


def read_rows(path: str | Path, kind: str) -> list[tuple[str, dict]]:
    """The rows of `path`, each (where, row); `kind` names the file in errors ("prompt", ...)."""
    if str(path).startswith(HUB_PREFIX):
        return _read_hub_dataset(str(path), kind)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {kind} file not found")
    suffix = path.suffix.lower()
    if path.is_dir():
        rows = _read_dataset_folder(path)
    elif suffix in (".jsonl", ".json"):
        rows = _read_json(path)
    elif suffix == ".csv":
        rows = _read_csv(path)
    elif suffix == ".parquet":
        rows = _read_parquet(path)
    else:
        raise DataError(f"{path}: unknown {kind} file type {suffix!r} (use .jsonl, .json, .csv, .parquet, a saved datasets folder or hf:NAME)")
    if not rows:
        raise DataError(f"{path}: no {kind}s in file" if kind == "prompt" else f"{path}: no rows in file")
    return rows


def _decode(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: line {number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})") from None


def _read_json(path: Path) -> list[tuple[str, dict]]:
    """One JSON object per line, or (a file starting with `[`) one array of objects."""
    with path.open("rb") as handle:
        lines = [_decode(path, number, raw) for number, raw in enumerate(handle, start=1)]
    if "".join(lines).lstrip().startswith("["):
        try:
            items = json.loads("".join(lines))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {err.lineno}: malformed JSON ({err.msg})") from None
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DataError(f"{path}: item {i + 1}: expected a JSON object in the array")
        return [(f"item {i + 1}", item) for i, item in enumerate(items)]
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number}: malformed JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object per line (or one JSON array of objects)")
        rows.append((f"line {number}", row))
    return rows


def _read_csv(path: Path) -> list[tuple[str, dict]]:
    """Every cell as the text it holds; a row is named by the line it starts on."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            _decode(path, number, raw)
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                return []
            start = reader.line_num + 1
            for cells in reader:
                if cells:
                    if len(cells) != len(header):
                        raise DataError(f"{path}: line {start}: {len(cells)} fields where the header has {len(header)}")
                    rows.append((f"line {start}", dict(zip(header, cells))))
                start = reader.line_num + 1
        except csv.Error as err:
            raise DataError(f"{path}: line {reader.line_num}: cannot read as CSV ({err})") from None
    return rows


def _read_parquet(path: Path) -> list[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types; each means the file is not readable Parquet
        raise DataError(f"{path}: cannot read as parquet: {first_line(err)}") from None
    return [(f"row {i}", row) for i, row in enumerate(table.to_pylist())]


def first_line(err: BaseException) -> str:
    """An exception's first non-empty line (libraries' messages span several), or its type's name."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def _read_dataset_folder(path: Path) -> list[tuple[str, dict]]:
    import datasets

    try:
        table = datasets.load_from_disk(str(path))
    except Exception as err:
        raise DataError(f"{path}: not a saved datasets folder: {first_line(err)}") from None
    if isinstance(table, datasets.DatasetDict):
        if "train" not in table:
            raise DataError(f"{path}: saved DatasetDict has no 'train' split (has {sorted(table)})")
        table = table["train"]
    return [(f"row {i}", row) for i, row in enumerate(table.to_list())]


def parse_hub_name(spec: str) -> tuple[str, str | None, str]:
    """hf:NAME[:CONFIG][@SPLIT] -> (name, config or None, split; train unless given)."""
    rest = spec[len(HUB_PREFIX) :]
    rest, _, split = rest.partition("@")
    name, _, config = rest.partition(":")
    if not name:
        raise DataError(f"{spec}: give a dataset name, hf:NAME[:CONFIG][@SPLIT] (e.g. hf:openai/gsm8k:main@test)")
    return name, config or None, split or "train"


def _read_hub_dataset(spec: str, kind: str) -> list[tuple[str, dict]]:
    """A dataset by name through `datasets`: from its local cache when the hub is offline
    (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1), else downloaded as `datasets` does."""
    import datasets

    name, config, split = parse_hub_name(spec)
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()  # its "using the cached version" notes: the run's first line says what it reads
    offline = any(os.environ.get(var, "").lower() in ("1", "true", "yes", "on") for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    try:
        table = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # noqa: BLE001 - datasets raises many types: absent, no such split, no network
        why = first_line(err)
        if offline:
            raise DataError(f"{spec}: {kind} dataset {name!r} (config {config}, split {split}) is not in the local datasets cache and the hub is offline ({why})") from None
        raise DataError(f"{spec}: cannot load {kind} dataset {name!r} (config {config}, split {split}): {why}") from None
    if not len(table):
        raise DataError(f"{spec}: no rows in split {split}")
    return [(f"row {i}", row) for i, row in enumerate(table.to_list())]
