"""Named prompt sets validated beside the held-out prompts (eval.prompt_sets -> val/<set>/*), and
early stopping, the plateau LR and best/ following a figure chosen by name (early_stop.metric)."""

import json

import pytest

from rlhand.config.load import ConfigError
from rlhand.stages import build_run
from rlhand.tasks.letters import make_letter_prompts
from tests.conftest import FAST, compose_cfg


def prompt_file(path, count, seed):
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in make_letter_prompts(count, 8, seed)), encoding="utf-8")
    return path


def test_each_prompt_set_is_validated_and_early_stopping_follows_the_named_figure(tmp_path):
    hard = prompt_file(tmp_path / "hard.jsonl", 8, seed=123)
    overrides = FAST + [
        "trainer.max_steps=4", "eval.every=1", "eval.num_prompts=8",
        f"+eval.prompt_sets.hard.path={hard}", "+eval.scorers.gold._target_=rlhand.tasks.letters.letters_reward",
        "early_stop.metric=-val/hard/response_length", "early_stop.threshold=0",
    ]  # fmt: skip
    history = build_run(compose_cfg(overrides), tmp_path / "run").fit()
    for row in history:
        for figure in ("reward", "reward_gold", "kl", "entropy", "response_length"):
            assert f"val/{figure}" in row and f"val/hard/{figure}" in row
        # The run's reward is the letters reward: the gold scorer gives the same on each set.
        assert row["val/hard/reward_gold"] == pytest.approx(row["val/hard/reward"], abs=1e-6)
    lengths = [row["val/hard/response_length"] for row in history]
    best_step = history[lengths.index(min(lengths))]["step"]  # lower is better: the first shortest
    meta = json.loads((tmp_path / "run" / "best" / "meta.json").read_text())
    assert meta["step"] == best_step and meta["val/hard/response_length"] == pytest.approx(min(lengths))
    assert history[-1]["val/best_hard_response_length"] == pytest.approx(min(lengths))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["eval.every=1", "early_stop.metric=val/gold"], r"^early_stop.metric: no validation logs 'val/gold' \(have val/entropy, val/kl, "),
        (["early_stop.metric=val/reward"], r"^early_stop.metric: follows a validation figure: needs eval.every > 0"),
        (["early_stop.metric=reward/mean"], r"^early_stop.metric: names a validation figure \(val/...\)"),
        (["+eval.prompt_sets.hard.num_prompts=4"], r"^eval.prompt_sets.hard: needs a path"),
        (["+eval.prompt_sets.kl.path=x.jsonl"], r"^eval.prompt_sets.kl: a name of letters, digits"),
        (["+eval.prompt_sets.gold.path=x.jsonl", "+eval.scorers.gold._target_=m.f"], r"^eval.prompt_sets.gold: the name of an eval.scorers entry too"),
        (["stage=sft", "+eval.prompt_sets.hard.path=x.jsonl"], r"^eval.prompt_sets: belongs to validating generations \(stage=ppo\)"),
        (["stage=reward_model", "eval.samples_every=2"], r"^eval.samples_every: belongs to validating generations"),
        (["eval.every=1", "early_stop.metric=val/kl", "algo.kl_coef=0"], r"^early_stop.metric: no validation logs 'val/kl'"),
    ],
)
def test_bad_prompt_sets_and_figures_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_cfg(overrides)


def test_a_missing_prompt_set_file_is_one_line_before_models_load(tmp_path, monkeypatch):
    import rlhand.stages.ppo.setup as setup

    monkeypatch.setattr(setup, "build_models", lambda *a, **k: pytest.fail("models loaded before the prompt set was read"))
    with pytest.raises(ConfigError, match=r"^eval.prompt_sets.hard.path: .*no/such.jsonl"):
        build_run(compose_cfg(FAST + ["eval.every=1", "eval.num_prompts=8", "+eval.prompt_sets.hard.path=no/such.jsonl"]), tmp_path)
