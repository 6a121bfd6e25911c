import json

import pytest
import torch

from rlhand.config.schema import Truncation
from rlhand.data.prompts import Prompt, PromptError, encode_prompts, read_prompt_file, truncate_prompt
from rlhand.data.sampler import PromptSampler, left_pad
from rlhand.data.tokenizer import build_char_tokenizer
from rlhand.rewards.function import FunctionScorer
from rlhand.stages.ppo.setup import prepare_inputs
from rlhand.tasks.letters import letters_reward, make_letter_prompts
from tests.conftest import compose_cfg


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def texts(prompts):
    return [p.text for p in prompts]


def test_jsonl_reads_the_column(tmp_path):
    f = write(tmp_path / "p.jsonl", '{"prompt": "a"}\n\n{"prompt": "b", "x": 1}\n')
    assert read_prompt_file(f, "prompt") == [Prompt(f"{f}: line 1", "a"), Prompt(f"{f}: line 3", "b", columns={"x": 1})]


@pytest.mark.parametrize(
    "name, text, column, message",
    [
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n', "prompt", "line 2: malformed JSON"),
        ("list.jsonl", '["a"]\n', "prompt", "item 1: expected a JSON object"),
        ("lines.jsonl", '{"prompt": "a"}\n["a"]\n', "prompt", "line 2: expected a JSON object"),
        ("empty.jsonl", "", "prompt", "no prompts"),
        ("col.jsonl", '{"text": "a"}\n', "prompt", "no column 'prompt'"),
        ("blank.jsonl", '{"prompt": "a"}\n{"prompt": "  "}\n', "prompt", "line 2: 'prompt' is missing or empty"),
        ("p.txt", "a\n", "prompt", "unknown prompt file type"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, name, text, column, message):
    f = write(tmp_path / name, text)
    with pytest.raises(PromptError) as err:
        read_prompt_file(f, column)
    assert str(f) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(PromptError, match="not found"):
        read_prompt_file(tmp_path / "nope.jsonl", "prompt")


def test_csv_and_parquet_and_saved_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    write(tmp_path / "p.csv", "prompt,other\nhello,1\nworld,2\n")
    assert texts(read_prompt_file(tmp_path / "p.csv", "prompt")) == ["hello", "world"]
    table = datasets.Dataset.from_dict({"question": ["q1", "q2"]})
    table.to_parquet(str(tmp_path / "p.parquet"))
    assert texts(read_prompt_file(tmp_path / "p.parquet", "question")) == ["q1", "q2"]
    table.save_to_disk(str(tmp_path / "saved"))
    assert texts(read_prompt_file(tmp_path / "saved", "question")) == ["q1", "q2"]
    with pytest.raises(PromptError, match="line 3"):
        write(tmp_path / "gap.csv", "prompt\nok\n\"\"\n")
        read_prompt_file(tmp_path / "gap.csv", "prompt")


def test_truncation_modes():
    ids = list(range(10))
    assert truncate_prompt(ids, 4, Truncation.left, "x") == [6, 7, 8, 9]
    assert truncate_prompt(ids, 4, Truncation.right, "x") == [0, 1, 2, 3]
    assert truncate_prompt(ids, 10, Truncation.error, "x") == ids
    with pytest.raises(PromptError, match="prompt 3: prompt has 10 tokens > task.max_prompt_tokens=4"):
        truncate_prompt(ids, 4, Truncation.error, "prompt 3")


def test_sampler_passes_are_permutations_and_state_round_trips():
    s = PromptSampler(5, seed=0)
    first = s.next_indices(5)
    assert sorted(first) == list(range(5))
    state = s.state_dict()
    nxt = s.next_indices(7)
    s2 = PromptSampler(5, seed=0)
    s2.load_state_dict(state)
    assert s2.next_indices(7) == nxt


def test_left_pad():
    ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]


def test_letters_reward_is_prompt_dependent_and_bounded():
    assert letters_reward(["abc="], ["abca"]) == [1.0]
    assert letters_reward(["abc="], ["xyz"]) == [-1.0]
    assert letters_reward(["abc="], ["ax"]) == [0.0]
    assert letters_reward(["abc="], [""]) == [-1.0]
    prompts = make_letter_prompts(500, 8, seed=0)
    constant = sum(letters_reward(prompts, ["eeee"] * 500)) / 500
    assert -0.6 < constant < -0.2  # a constant answer cannot score well
    assert len(set(prompts)) > 450 and all(len(p) == 9 for p in prompts)


@pytest.mark.parametrize("name", ["p.jsonl", "p.csv"])
def test_non_utf8_file_names_the_line(tmp_path, name):
    lines = ['{"prompt": "ok"}', '{"prompt": "fine"}', '{"prompt": "caf\xe9"}'] if name.endswith("jsonl") else ["prompt", "ok", "caf\xe9"]
    path = tmp_path / name
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    with pytest.raises(PromptError, match=rf"{name}: line 3: not valid UTF-8 \(byte 0xe9 at column"):
        read_prompt_file(path, "prompt")


def decoded_by_the_reward(tokenizer, text):
    """The prompt text a reward function receives, after the char tokenizer's round trip."""
    (ids,) = encode_prompts(tokenizer, [Prompt("x", text)], 64, Truncation.error)
    seen = {}

    def spy(prompts, responses, **_):
        seen["prompt"] = prompts[0]
        return [0.0]

    prompt_ids, prompt_mask = left_pad([ids], tokenizer.pad_token_id)
    response = torch.tensor([[tokenizer.eos_token_id]])
    FunctionScorer(spy, tokenizer)(prompt_ids, prompt_mask, response, torch.ones_like(response), torch.tensor([True]))
    return ids, seen["prompt"]


def test_char_tokenizer_keeps_line_breaks_and_never_injects_special_tokens():
    tokenizer = build_char_tokenizer()
    text = "a\tb\r\nc <eos> x<pad>"
    ids, seen = decoded_by_the_reward(tokenizer, text)
    assert seen == text
    assert ids.count(tokenizer.eos_token_id) == 0 and ids.count(tokenizer.pad_token_id) == 0
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_unrepresentable_characters_name_the_file_line(tmp_path):
    path = write(tmp_path / "p.jsonl", json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"prompt": "caf\u00e9\n<eos>x"}) + "\n")
    with pytest.raises(PromptError, match=r"p.jsonl: line 2: the tokenizer cannot represent 'é' \(U\+00E9\)"):
        encode_prompts(build_char_tokenizer(), read_prompt_file(path, "prompt"), 32, Truncation.left)


def test_truncation_error_names_the_file_line_after_the_validation_holdout(tmp_path):
    rows = [{"prompt": f"p{i}="} for i in range(12)]
    rows[9]["prompt"] = "x" * 40  # line 10 of the file
    path = write(tmp_path / "p.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    for holdout in ("eval.every=0", "eval.every=5"):
        cfg = compose_cfg(
            ["task=file", f"task.path={path}", "reward=letters", "task.truncation=error", holdout, "eval.num_prompts=4"]
        )
        with pytest.raises(PromptError, match=rf"{path}: line 10: prompt has 41 tokens > task.max_prompt_tokens=32"):
            prepare_inputs(cfg)


def test_truncation_drop_leaves_long_prompts_out_and_says_how_many(tmp_path, capsys):
    path = write(tmp_path / "p.jsonl", "".join(json.dumps({"prompt": text}) + "\n" for text in ["ab=", "x" * 40 + "=", "cd=", "ef="]))
    inputs = prepare_inputs(compose_cfg(["task=file", f"task.path={path}", "task.truncation=drop", "reward=letters"]))
    assert len(inputs.prompts) == len(inputs.prompt_ids) == 3 and inputs.dropped == 1
    assert [p.text for p in inputs.prompts] == ["ab=", "cd=", "ef="]
    assert "rlhand: 1 prompts longer than task.max_prompt_tokens=32 left out (task.truncation=drop)" in capsys.readouterr().err
