"""The data layouts users bring, read as they are: verl's RL parquet (a message list, nested
ground truth, data_source, extra_info), TRL's conversational prompt-only JSONL, JSON arrays (Alpaca),
CSV cells as text, a `datasets` name from the local cache; and what is refused, in one line naming
the row or the key."""

import glob
import json
import os
import shutil

import pytest

from rlhand.data.files import DataError, parse_hub_name, read_rows
from rlhand.data.prompts import PromptFormat, read_prompt_file

VERL_ROWS = [
    {
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content": f"What is {i} plus {i}? Let's think step by step."}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
        "extra_info": {"split": "train", "index": i},
    }
    for i in range(6)
]


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_verl_parquet_keeps_the_conversation_every_column_and_the_nested_ground_truth(tmp_path):
    path = write_parquet(tmp_path / "train.parquet", VERL_ROWS)
    prompts = read_prompt_file(path, PromptFormat(label_column="reward_model.ground_truth"))
    first = prompts[1]
    assert first.where == f"{path}: row 1" and first.messages == VERL_ROWS[1]["prompt"] and first.text is None
    assert first.label == "2"
    assert first.columns == {k: v for k, v in VERL_ROWS[1].items() if k != "prompt"}  # nested values as they are


def test_trl_conversational_prompt_only_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}], "solution": a}) + "\n" for q, a in [("2+2?", "4"), ("3+3?", "6")]))
    prompts = read_prompt_file(path, PromptFormat(label_column="solution"))
    assert [p.label for p in prompts] == ["4", "6"] and prompts[0].messages[0]["role"] == "system" and prompts[0].columns == {}


def test_a_json_array_file_is_rows_named_by_item(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([{"instruction": "Say hi", "input": "", "output": "hi"}, {"instruction": "Add", "input": "1 and 2", "output": "3"}], indent=2))
    assert read_rows(path, "demonstration") == [("item 1", {"instruction": "Say hi", "input": "", "output": "hi"}), ("item 2", {"instruction": "Add", "input": "1 and 2", "output": "3"})]
    path.write_text('[{"a": 1},\n {"a": ]')
    with pytest.raises(DataError, match=rf"^{path}: line 2: malformed JSON"):
        read_rows(path, "demonstration")


def test_csv_cells_are_the_text_they_hold(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt,answer,note\n"What is 40 + 2?",042,\n"multi\nline",1.50,NA\n')
    rows = read_rows(path, "prompt")
    assert rows == [("line 2", {"prompt": "What is 40 + 2?", "answer": "042", "note": ""}), ("line 3", {"prompt": "multi\nline", "answer": "1.50", "note": "NA"})]
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,answer\na,1\nb,2,3\n")
    with pytest.raises(DataError, match=rf"^{bad}: line 3: 3 fields where the header has 2$"):
        read_rows(bad, "prompt")


@pytest.mark.parametrize(
    "rows, fmt, message",
    [
        ([{"prompt": "a"}, {"prompt": [{"role": "user", "content": "b"}]}], PromptFormat(), "line 2: 'prompt' is a message list where the rows before it have text"),
        ([{"prompt": "a", "gt": "1"}, {"prompt": "b"}], PromptFormat(label_column="gt"), "line 2: task.label_column 'gt': no 'gt' in this row (has ['prompt'])"),
        ([{"prompt": "a", "rm": {"style": "rule"}}], PromptFormat(label_column="rm.ground_truth"), "line 1: task.label_column 'rm.ground_truth': no 'rm.ground_truth' in this row (has ['style'])"),
        ([{"prompt": "a", "gt": None}], PromptFormat(label_column="gt"), "line 1: task.label_column 'gt' is null"),
        ([{"prompt": "a", "labels": 1}], PromptFormat(), "line 1: column 'labels' has the name of a reward-function argument"),
        ([{"prompt": 42}], PromptFormat(), "line 1: 'prompt' is int (42), not text or a message list"),
        ([{"prompt": [{"role": "user", "content": "a"}, {"role": "narrator", "content": "b"}]}], PromptFormat(), "line 1: 'prompt' turn 2 has role 'narrator'"),
    ],
)
def test_bad_prompt_rows_are_one_line_naming_the_row(tmp_path, rows, fmt, message):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        read_prompt_file(path, fmt)
    assert str(err.value) == f"{path}: {message}" or str(err.value).startswith(f"{path}: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_a_label_column_named_labels_is_the_labels(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a", "labels": "1", "other": 2}) + "\n")
    (prompt,) = read_prompt_file(path, PromptFormat(label_column="labels"))
    assert prompt.label == "1" and prompt.columns == {"other": 2}


def cache_dataset(cache, name: str, config: str, rows: list[dict], tmp_path) -> None:
    """Leave `rows` in the datasets cache as `load_dataset(name, config)` leaves a dataset it downloaded."""
    import datasets

    source = tmp_path / "source.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    datasets.load_dataset("json", data_files=str(source), split="train", cache_dir=str(cache))
    built = glob.glob(str(cache / "json" / "*" / "*" / "*"))[0]
    version, fingerprint = built.split(os.sep)[-2:]
    namespace, dataset = name.split("/")
    target = cache / f"{namespace}___{dataset}" / config / version / fingerprint
    shutil.copytree(built, target)
    for file in os.listdir(target):
        if file.startswith("json-"):
            os.rename(target / file, target / f"{dataset}-{file[5:]}")
    info = json.loads((target / "dataset_info.json").read_text())
    info["config_name"] = config
    (target / "dataset_info.json").write_text(json.dumps(info))


def test_a_datasets_name_reads_from_the_local_cache_offline_and_an_absent_one_is_one_line(tmp_path, monkeypatch):
    import datasets

    cache = tmp_path / "cache"
    cache_dataset(cache, "myorg/mymath", "main", [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}], tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = read_prompt_file("hf:myorg/mymath:main@train", PromptFormat(column="question", label_column="answer"))
    assert [(p.where, p.text, p.label) for p in prompts] == [("hf:myorg/mymath:main@train: row 0", "1+1?", "2"), ("hf:myorg/mymath:main@train: row 1", "2+2?", "4")]
    with pytest.raises(DataError, match=r"^hf:myorg/absent: prompt dataset 'myorg/absent' \(config None, split train\) is not in the local datasets cache and the hub is offline"):
        read_rows("hf:myorg/absent", "prompt")


def test_hub_names_parse():
    assert parse_hub_name("hf:openai/gsm8k:main@test") == ("openai/gsm8k", "main", "test")
    assert parse_hub_name("hf:trl-lib/tldr") == ("trl-lib/tldr", None, "train")
    with pytest.raises(DataError, match="give a dataset name"):
        parse_hub_name("hf:")
