"""pass@k (Chen et al. 2021's unbiased estimator) and its bootstrap interval over prompts."""

from math import comb

import numpy as np
import pytest

from rlhand.evaluation.pass_at_k import (
    accuracy_results,
    accuracy_summary,
    ks_for,
    pass_at_k,
    pass_at_k_interval,
    per_prompt_pass_at_k,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),
        (5, 2, 5, 1.0),
        (5, 0, 1, 0.0),
        (5, 0, 5, 0.0),
        (10, 3, 2, 1 - 21 / 45),
        (10, 10, 1, 1.0),
        (1, 1, 1, 1.0),
        (4, 1, 3, 0.75),
    ],
)
def test_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_the_product_form_is_the_binomial_one_and_stable():
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)
    assert 0 < pass_at_k(1000, 1, 1) == pytest.approx(0.001)  # no C(1000, k) formed
    assert pass_at_k(1000, 3, 500) == pytest.approx(1 - comb(997, 500) / comb(1000, 500))


def test_bad_counts_are_errors():
    for n, c, k in ((5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_pass_at_1_is_the_mean_correctness_and_pass_at_k_averages_prompts():
    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    assert per_prompt_pass_at_k(correct, 1).mean() == pytest.approx(correct.mean())
    assert per_prompt_pass_at_k(correct, 2).tolist() == pytest.approx([0.5, 1 - 1 / 6, 0.0])
    assert per_prompt_pass_at_k(correct, 4).tolist() == [1.0, 1.0, 0.0]


def test_reported_ks():
    assert ks_for(1) == [1] and ks_for(2) == [1, 2] and ks_for(8) == [1, 2, 4, 8] and ks_for(10) == [1, 2, 4, 8, 10]


def test_the_bootstrap_interval_holds_the_estimate_and_is_the_same_per_seed():
    rng = np.random.default_rng(1)
    correct = rng.random((50, 8)) < rng.random((50, 1))  # prompts of different difficulty
    for k in (1, 4, 8):
        estimate = per_prompt_pass_at_k(correct, k).mean()
        low, high = pass_at_k_interval(correct, k, seed=3)
        assert low <= estimate <= high and low < high
        assert pass_at_k_interval(correct, k, seed=3) == (low, high)
    assert pass_at_k_interval(correct, 1, seed=4) != pass_at_k_interval(correct, 1, seed=3)
    assert pass_at_k_interval(np.ones((5, 2), dtype=bool), 1) == (1.0, 1.0)


def test_the_summary_and_its_report_rows():
    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    summary = accuracy_summary(correct, ungraded=2, seed=0)
    assert summary["samples"] == 4 and summary["ungraded"] == 2
    assert summary["pass@1"] == pytest.approx(0.25) and summary["pass@4"] == pytest.approx(2 / 3)
    assert summary == accuracy_summary(correct, ungraded=2, seed=0)
    ((policy, grader, passes, ungraded),) = accuracy_results({"rl": {"math": summary}})
    assert (policy, grader, ungraded) == ("rl", "math", 2)
    assert [k for k, *_ in passes] == [1, 2, 4] and passes[0][1:] == (summary["pass@1"], *summary["pass@1_ci"])
