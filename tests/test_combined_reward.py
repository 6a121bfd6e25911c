"""Several rewards as one score (reward.weight, reward.components): the weighted sum, each logged."""

import pytest

from rlhand.config.load import ConfigError
from rlhand.stages import build_run
from tests.conftest import FAST, compose_cfg


def length_bonus(prompts, responses, **_):
    return [float(len(r)) for r in responses]


def test_the_score_is_the_weighted_sum_and_each_component_is_logged(tmp_path):
    overrides = FAST + ["reward.weight=2.0", "+reward.components.length._target_=tests.test_combined_reward.length_bonus", "+reward.components.length.weight=-0.25"]
    history = build_run(compose_cfg(overrides), tmp_path).fit()
    for row in history:
        assert row["reward/mean"] == pytest.approx(2.0 * row["reward/main"] - 0.25 * row["reward/length"], abs=1e-5)
        assert row["reward/length"] > 0 and -1 <= row["reward/main"] <= 1


def test_a_component_without_a_weight_or_named_main_is_one_line():
    with pytest.raises(ConfigError, match=r"reward.components.length.weight: needs a number"):
        compose_cfg(["+reward.components.length._target_=tests.test_combined_reward.length_bonus"])
    with pytest.raises(ConfigError, match=r"reward.components.main: 'main', 'timeouts' and 'errors' name the run's own figures"):
        compose_cfg(["+reward.components.main._target_=tests.test_combined_reward.length_bonus", "+reward.components.main.weight=1"])
