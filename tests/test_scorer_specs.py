"""Named scorers as reward.components and eval.scorers: a reward function, a reward-model folder (with
its own tokenizer) or a reward server, each checked before any model loads (rlhand/rewards/specs.py)."""

import pytest

from rlhand.config.load import ConfigError
from rlhand.errors import UserError
from rlhand.rewards.retokenize import RetokenizingScorer
from rlhand.stages import build_run
from tests.conftest import FAST, compose_cfg


def test_components_and_validation_scorers_of_every_kind(tmp_path, letters_server, rm_folder):
    overrides = FAST + [
        f"+reward.components.rm.model={rm_folder}", "+reward.components.rm.weight=0.5",
        f"+reward.components.served.url={letters_server}", "+reward.components.served.weight=1.0",
        f"+eval.scorers.rm.model={rm_folder}", f"+eval.scorers.served.url={letters_server}",
        "eval.every=1", "eval.num_prompts=8",
    ]  # fmt: skip
    run = build_run(compose_cfg(overrides), tmp_path / "run")
    assert isinstance(run.stage.scorer.components["rm"][0], RetokenizingScorer)  # its own tokenizer: texts tokenized again
    assert isinstance(run.stage.val_scorers["rm"], RetokenizingScorer)
    history = run.fit()
    for row in history:
        # The server scores the same texts with the same function as the run's own reward.
        assert row["reward/served"] == pytest.approx(row["reward/main"], abs=1e-6)
        assert row["reward/mean"] == pytest.approx(row["reward/main"] + 0.5 * row["reward/rm"] + row["reward/served"], abs=1e-5)
        # Validation scores with the whole combined reward; its scorers score the same responses apart.
        assert row["val/reward"] == pytest.approx(2 * row["val/reward_served"] + 0.5 * row["val/reward_rm"], abs=1e-5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+eval.scorers.x.url=ftp://host/x"], r"^eval.scorers.x.url: needs an http:// or https:// URL, not 'ftp://host/x'"),
        (["+eval.scorers.x.model=/tmp/rm", "+eval.scorers.x._target_=m.f"], r"^eval.scorers.x: needs exactly one of .*, not _target_ and model"),
        (["+reward.components.x.model=/tmp/rm"], r"^reward.components.x.weight: needs a number"),
    ],
)
def test_a_malformed_spec_is_one_line_naming_it(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_cfg(overrides)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("+eval.scorers.x.model=/no/such/rm", r"^eval.scorers.x.model: /no/such/rm: no such folder"),
        ("+eval.scorers.x.url=http://127.0.0.1:9/r", r"^eval.scorers.x.url: cannot reach http://127.0.0.1:9/r"),
        ("+eval.scorers.x._target_=no.such.fn", r"^eval.scorers.x._target_: cannot import 'no.such.fn'"),
    ],
)
def test_a_scorer_that_cannot_be_used_is_one_line_before_models_load(spec, message, tmp_path, monkeypatch):
    import rlhand.stages.ppo.setup as setup

    monkeypatch.setattr(setup, "build_models", lambda *a, **k: pytest.fail("models loaded before the scorer was checked"))
    with pytest.raises(UserError, match=message):
        build_run(compose_cfg(FAST + [spec, "eval.every=1", "eval.num_prompts=8"]), tmp_path)


def test_an_unknown_setting_of_a_reward_model_scorer_is_one_line(tmp_path, rm_folder):
    with pytest.raises(ConfigError, match=r"^eval.scorers.x.temperature: not a setting of a scorer with model \(have chat_template, model\)"):
        compose_cfg(FAST + [f"+eval.scorers.x.model={rm_folder}", "+eval.scorers.x.temperature=2", "eval.every=1", "eval.num_prompts=8"])
    with pytest.raises(ConfigError, match=r"^reward.components.s.timeout_s: needs a number > 0, not 'abc'"):
        compose_cfg(FAST + ["+reward.components.s.url=http://h/r", "+reward.components.s.weight=1", "+reward.components.s.timeout_s=abc"])
    with pytest.raises(ConfigError, match=r"^eval.scorers.s.in_flight: needs a whole number >= 1, not 0"):
        compose_cfg(FAST + ["+eval.scorers.s.url=http://h/r", "+eval.scorers.s.in_flight=0"])
