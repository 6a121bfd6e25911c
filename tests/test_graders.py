"""reward=math and the format rule: the cases the issue names, and math-verify's own documented ones
(its README: sets, LaTeX fractions, percentages, intervals)."""

import pytest

from rlhand.rewards.graders.format import format_reward, tag_pattern
from rlhand.rewards.graders.math import math_reward
from rlhand.rewards.unscored import Unscored
from tests.conftest import compose_cfg


def grades(responses, labels, **options):
    return math_reward([""] * len(responses), responses, labels, **options)


@pytest.mark.parametrize(
    "response, label, expected",
    [
        ("so the total is \\boxed{42}", "42", 1.0),
        ("\\boxed{1/2}", "0.5", 1.0),
        ("\\boxed{41}", "42", 0.0),
        ("I do not know.", "42", 0.0),
        ("", "42", 0.0),
        ("3 + 4 = 7, so the answer is 7.", "7", 1.0),  # no box: math-verify's anchors, then the last number
        ("3 + 4 = 7, so 8", "7", 0.0),
        ("\\boxed{\\frac{1}{2}}", "\\frac12", 1.0),  # a bare LaTeX label
        ("The final answer is $\\frac{1}{2}$", "$0.5$", 1.0),
        # math-verify's README: sets, intervals, percentages
        ("The answer is $\\{1,3\\} \\cup \\{2,4\\}$", "${1,2,3,4}$", 1.0),
        ("\\boxed{(1, 2]}", "$(1,2]$", 1.0),
        ("\\boxed{10\\%}", "$10\\%$", 1.0),
        ("\\boxed{7}", 7, 1.0),  # a number read from a parquet or JSON column
        ("\\boxed{8}", ["7", "8"], 1.0),  # any of several accepted answers
    ],
)
def test_math_grades_the_final_answer_against_the_label(response, label, expected):
    assert grades([response], [label]) == [expected]


def test_boxed_only_counts_a_boxed_answer():
    assert grades(["so the answer is 7", "so \\boxed{7}"], ["7", "7"], answer="boxed") == [0.0, 1.0]
    with pytest.raises(ValueError, match="answer='last'"):
        grades(["7"], ["7"], answer="last")


def test_a_label_it_cannot_read_is_unscored_not_a_silent_zero():
    out = grades(["\\boxed{1}", "\\boxed{1}", "\\boxed{1}"], ["", None, "%%%"])
    assert all(isinstance(x, Unscored) for x in out), out
    assert "%%%" in out[2].reason
    missing = math_reward(["p"], ["\\boxed{1}"])  # no task.label_column: no labels at all
    assert isinstance(missing[0], Unscored) and "task.label_column" in missing[0].reason


def test_format_rule_tags_and_pattern():
    responses = [
        "<think>2+2 is 4</think>\n<answer>4</answer>",
        "<think>2+2</think>",
        "preamble <think>x</think><answer>4</answer>",
        "<think>a<think>b</think></think><answer>4</answer>",
        "<think>\nmulti\nline\n</think> <answer>4</answer> ",
    ]
    assert format_reward(None, responses) == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert format_reward(None, ["\\boxed{3}", "3"], pattern=r".*\\boxed\{.+\}.*") == [1.0, 0.0]
    assert tag_pattern(["answer"]) == tag_pattern("answer")
    with pytest.raises(ValueError, match="pattern"):
        format_reward(None, ["x"], pattern="(")


def test_reward_presets_compose():
    cfg = compose_cfg(["task=file", "task.path=p.jsonl", "task.label_column=answer", "reward=math"])
    assert cfg.reward.function["_target_"] == "rlhand.rewards.graders.math.math_reward"
    cfg = compose_cfg(["reward=math", "+reward.components.format={_target_: rlhand.rewards.graders.format.format_reward, weight: 0.2}"])
    assert cfg.reward.components["format"]["weight"] == 0.2
    assert compose_cfg(["reward=format"]).reward.function["tags"] == "think,answer"


def test_the_code_preset_scores_in_workers_under_a_time_limit():
    cfg = compose_cfg(["reward=code", "task=file", "task.path=p.jsonl", "task.label_column=tests"])
    assert cfg.reward.function["_target_"] == "rlhand.rewards.graders.code.code_reward"
    assert cfg.reward.workers >= 1 and cfg.reward.timeout_s > cfg.reward.function["time_limit_s"]


def test_a_grader_without_a_label_column_is_one_line_before_any_model_loads(tmp_path):
    from rlhand.config.load import ConfigError
    from rlhand.stages import build_run
    from tests.conftest import FAST

    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "1+1=", "answer": "2"}\n' * 8)
    with pytest.raises(ConfigError, match=r"reward.function: rlhand.rewards.graders.math.math_reward grades .* task.label_column is not set"):
        build_run(compose_cfg(FAST + ["task=file", f"task.path={path}", "reward=math"]), tmp_path / "run")
