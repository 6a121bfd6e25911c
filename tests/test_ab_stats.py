"""A/B statistics (rlhand/evaluation/ab.py) against hand values."""

import numpy as np
import pytest

from rlhand.evaluation.ab import ab_summary, bootstrap_interval, length_controlled, outcomes


def test_outcomes_count_ties_as_half():
    assert outcomes([1.0, 0.0, 0.5], [0.0, 1.0, 0.5]).tolist() == [1.0, 0.0, 0.5]


def test_the_bootstrap_interval_holds_the_mean_and_narrows_with_more_prompts():
    wins = np.array([1.0] * 60 + [0.0] * 40)
    low, high = bootstrap_interval(wins, seed=1)
    assert low < 0.6 < high and high - low == pytest.approx(2 * 1.96 * np.sqrt(0.24 / 100), rel=0.15)  # the normal approximation's width
    assert bootstrap_interval(wins, seed=1) == (low, high)  # seeded: the same interval again
    low4, high4 = bootstrap_interval(np.tile(wins, 4), seed=1)
    assert high4 - low4 < (high - low) * 0.6


def test_length_control_removes_a_win_rate_that_only_length_explains():
    rng = np.random.default_rng(0)
    diff = 1.0 + rng.normal(size=4000)  # A's responses are longer, by one on average
    won = (rng.random(4000) < 1 / (1 + np.exp(-2.0 * diff))).astype(float)  # and win by being longer alone
    assert won.mean() > 0.7  # the raw win rate says A is better
    assert length_controlled(won, diff) == pytest.approx(0.5, abs=0.03)  # at equal lengths it is not
    assert length_controlled(np.array([1.0, 0.0, 1.0, 1.0]), np.zeros(4)) == 0.75  # no length differences: the plain rate
    separated = np.linspace(-1, 1, 200)
    assert length_controlled((separated > 0).astype(float), separated) == pytest.approx(0.5, abs=0.02)  # length alone decides: finite, even


def test_a_policy_against_itself_is_even():
    summary = ab_summary([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [3, 4, 5], [3, 4, 5])
    assert summary["win_rate"] == 0.5 and summary["ties"] == 1.0 and summary["interval_95"] == [0.5, 0.5]
