"""task=arithmetic: prompts that carry their answers, demonstrations of a chosen quality, a held-out
split no training step sees, and a run against reward=math that reads the labels."""

from rlhand.rewards.graders.math import math_reward
from rlhand.stages import build_run
from rlhand.tasks.arithmetic import arithmetic_demonstrations, heldout_rows, make_arithmetic_prompts, pool
from tests.conftest import FAST, compose_cfg


def test_the_held_out_split_shares_no_question_with_training_prompts_or_demonstrations():
    test = {row["prompt"] for row in heldout_rows(10_000)}
    train = {q for q, *_ in pool("train")}
    assert len(test) > 1000 and not test & train
    assert not test & {q for q, _ in make_arithmetic_prompts(4096, 8, seed=3)}
    assert not test & {q for q, _ in arithmetic_demonstrations(4096, 8, 0.7, seed=3)}


def test_labels_are_the_answers_and_demonstrations_are_right_in_quality_of_cases():
    prompts = make_arithmetic_prompts(200, 8, seed=0)
    solved = [f"\\boxed{{{label}}}" for _, label in prompts]
    assert math_reward([q for q, _ in prompts], solved, [label for _, label in prompts]) == [1.0] * 200
    demos = arithmetic_demonstrations(2000, 8, 0.7, seed=0)
    answers = dict((q, str(a)) for q, _, _, _, a in pool("train"))
    right = math_reward(None, [c for _, c in demos], [answers[q] for q, _ in demos])
    assert 0.66 < sum(right) / len(right) < 0.74
    assert make_arithmetic_prompts(50, 8, seed=1) == make_arithmetic_prompts(50, 8, seed=1) != make_arithmetic_prompts(50, 8, seed=2)


def test_a_run_on_the_task_grades_against_each_prompts_label(tmp_path):
    cfg = compose_cfg(FAST + ["task=arithmetic", "trainer.save_final=false", "generation.max_new_tokens=4"])
    assert cfg.reward.name == "math"  # the task brings its grader
    run = build_run(cfg, tmp_path / "run")
    assert all(p.label is not None and p.label == str(int(p.label)) for p in run.stage.inputs.prompts)
    history = run.fit()
    # An untrained policy answers nothing right; every label was read (no reward/errors).
    assert [row["reward/errors"] for row in history] == [0.0, 0.0]
    assert all(row["reward/mean"] == 0.0 for row in history)
